"""The layer benchmark (docs/design.md section 6): one connection, forward + backward.

One hyper-connection with an identity branch (``width``, ``F(u) = u``, ``depth``) on streams of
shape ``(tokens, n, C)``; every contender runs forward and backward (gradients for the streams and
every parameter), interleaved with the others, on the same inputs. Contenders per configuration:

- ``<kind>``: ``hyperconn.make_connection(kind, n, C)`` as the library returns it (the fast path),
  eagerly or ``torch.compile``-d;
- ``naive:<kind>``: :func:`hyperconn.connections.reference.naive_forward`, the transcription of the official math
  (eager, float32: bf16 streams are cast up and the result back down);
- ``hyper-connections:hc`` / ``hyper-connections:mhc``: the ``hyper-connections`` package
  (PyPI), called the way its README does (``(batch * n, T, C)`` streams, ``branch_input,
  add_residual = hc(x)``), eager, when it is installed (``pip install hyperconn[bench]``); for bf16
  streams the module is cast to bf16 (``hc.to(torch.bfloat16)``);
  The references run eagerly in the compiled groups too (in the same rounds as the compiled
  library kinds), so ``speedup_vs_naive`` / ``speedup_vs_pkg_mhc`` of a compiled row compare a
  compiled library kind with the eager references timed alongside it;
- ``floor``: the mixing with constant, precomputed coefficients (no coefficient math, no
  coefficient gradients), compiled: the data movement no implementation can avoid;
- ``residual``: ``x + F(x)`` on one stream of width ``C``, for scale.

Reported: median milliseconds over interleaved rounds, ratios of medians taken in the same
rounds, and the bytes each contender saves for backward (:func:`saved_activation_bytes`).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch

from ..connections import available_connections, make_connection
from ..connections.reference import NAIVE_KINDS, naive_forward
from .timing import interleaved_medians, saved_activation_bytes

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
PACKAGE_KINDS = ("hc", "mhc")


@dataclass
class LayerBenchConfig:
    kinds: tuple[str, ...] = available_connections()
    num_streams: tuple[int, ...] = (2, 4, 8)
    dims: tuple[int, ...] = (256, 1024)
    dtypes: tuple[str, ...] = ("fp32", "bf16")
    modes: tuple[str, ...] = ("eager", "compiled")
    tokens: int = 2048
    repeats: int = 15
    warmup: int = 2
    naive: bool = True
    package: bool = True
    floor: bool = True
    floor_compiled: bool = True  # False only for smoke runs (compiling costs seconds)
    recompute: bool = False
    seed: int = 0
    skip: list[str] = field(default_factory=list)

    def validate(self) -> LayerBenchConfig:
        unknown = sorted(set(self.kinds) - set(available_connections()))
        if unknown:
            raise ValueError(f"unknown kind(s) {', '.join(unknown)}; choose from {', '.join(available_connections())}")
        bad = sorted(set(self.dtypes) - set(DTYPES))
        if bad:
            raise ValueError(f"unknown dtype(s) {', '.join(bad)}; choose from {', '.join(DTYPES)}")
        bad = sorted(set(self.modes) - {"eager", "compiled"})
        if bad:
            raise ValueError(f"unknown mode(s) {', '.join(bad)}; choose from eager, compiled")
        for name in ("tokens", "repeats"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if any(n < 1 for n in self.num_streams) or any(c < 1 for c in self.dims):
            raise ValueError(f"num_streams and dims must be >= 1, got {self.num_streams} and {self.dims}")
        return self


def supports(kind: str, n: int) -> bool:
    """Whether ``kind`` accepts ``n`` streams (mhc_lite n = 8 is skipped: 8! coefficients)."""
    if kind == "residual":
        return False  # measured separately, at n = 1
    if kind == "mhc_lite" and n > 4:
        return False  # 40320 coefficients per token: a (8C x 40320) projection, not a layer
    try:
        with torch.device("meta"):
            make_connection(kind, n, 8)
    except ValueError:
        return False
    return True


def _identity(u: torch.Tensor) -> torch.Tensor:
    return u


def _zero_grads(tensors: list[torch.Tensor]) -> None:
    for t in tensors:
        t.grad = None


def _fwd_bwd(forward: Callable[[], torch.Tensor], grad: torch.Tensor, leaves: list[torch.Tensor]):
    def step() -> None:
        _zero_grads(leaves)
        forward().backward(grad)

    return step


def _inputs(tokens: int, n: int, dim: int, dtype: torch.dtype, seed: int):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(tokens, n, dim, generator=gen).to(dtype).requires_grad_(True)
    grad = torch.randn(tokens, n, dim, generator=gen).to(dtype)
    return x, grad


def _perturb(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Move every parameter off its init (zero projections would make the coefficient math trivial)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=gen))
    return module


def library_contender(kind: str, n: int, x, grad, compiled: bool, recompute: bool = False, seed: int = 0):
    conn = _perturb(make_connection(kind, n, x.shape[-1], recompute=recompute), seed)
    module = torch.compile(conn, fullgraph=True) if compiled else conn
    leaves = [x, *conn.parameters()]
    return _fwd_bwd(lambda: module(x, _identity), grad, leaves), lambda: conn(x, _identity)


def naive_contender(kind: str, n: int, x, grad, seed: int = 0):
    conn = _perturb(make_connection(kind, n, x.shape[-1]), seed)
    state = {name: p.detach().clone().requires_grad_(True) for name, p in conn.named_parameters()}
    state.update({name: b for name, b in conn.named_buffers()})
    leaves = [x, *[v for v in state.values() if v.requires_grad]]

    def forward():  # the official math in float32 (linalg.solve has no bf16 kernel), cast back
        return naive_forward(conn, x.float(), _identity, state).to(x.dtype)

    return _fwd_bwd(forward, grad, leaves), forward


def package_available() -> bool:
    try:
        import hyper_connections  # noqa: F401
    except ImportError:
        return False
    return True


def package_contender(kind: str, n: int, x, grad, seed: int = 0):
    """The ``hyper-connections`` package's HC or mHC on its native ``(batch * n, T, C)`` layout."""
    import hyper_connections

    cls = hyper_connections.HyperConnections if kind == "hc" else hyper_connections.mHC
    # bf16: the module is cast too (its HC cannot take bf16 streams with float32 parameters)
    hc = _perturb(cls(n, dim=x.shape[-1], layer_index=0), seed).to(x.dtype)
    xs = x.detach().transpose(0, 1).contiguous().requires_grad_(True)  # (n, T, C): batch 1
    g = grad.transpose(0, 1).contiguous()
    leaves = [xs, *hc.parameters()]

    def forward():
        branch_input, add_residual = hc(xs)
        return add_residual(_identity(branch_input))

    return _fwd_bwd(forward, g, leaves), forward


def floor_contender(n: int, x, grad, compiled: bool, seed: int = 0):
    """Mixing with constant coefficients: ``x'_j = sum_i R[i,j] x_i + p_j * F(sum_i q_i x_i)``."""
    gen = torch.Generator().manual_seed(seed)
    tokens = x.shape[0]
    pre = torch.rand(tokens, n, generator=gen)
    res = torch.rand(tokens, n, n, generator=gen)
    post = torch.rand(tokens, n, generator=gen)

    def mix(x):
        xf = x.float()
        u = (pre.unsqueeze(-1) * xf).sum(-2)
        mixed = (res.unsqueeze(-1) * xf.unsqueeze(-2)).sum(-3)
        return (mixed + post.unsqueeze(-1) * _identity(u).unsqueeze(-2)).to(x.dtype)

    fn = torch.compile(mix, fullgraph=True) if compiled else mix
    return _fwd_bwd(lambda: fn(x), grad, [x]), lambda: mix(x)


def residual_contender(x, grad):
    x1 = x.detach()[:, :1].contiguous().requires_grad_(True)
    g1 = grad[:, :1].contiguous()
    conn = make_connection("residual", 1, x.shape[-1])
    return _fwd_bwd(lambda: conn(x1, _identity), g1, [x1]), lambda: conn(x1, _identity)


def build_contenders(cfg: LayerBenchConfig, n: int, x, grad, compiled: bool, use_package: bool) -> dict:
    """``{name: (fwd+bwd step, forward only)}`` for one configuration."""
    built = {}
    for kind in cfg.kinds:
        if not supports(kind, n):
            continue
        built[kind] = library_contender(kind, n, x, grad, compiled, seed=cfg.seed)
        if cfg.recompute:
            built[f"{kind}+recompute"] = library_contender(kind, n, x, grad, compiled, True, cfg.seed)
        if cfg.naive and kind in NAIVE_KINDS:  # eager always; in compiled groups too, so the speedups share the rounds
            built[f"naive:{kind}"] = naive_contender(kind, n, x, grad, cfg.seed)
    if use_package:
        for kind in PACKAGE_KINDS:
            built[f"hyper-connections:{kind}"] = package_contender(kind, n, x, grad, cfg.seed)
    if cfg.floor:
        # the floor is the compiled constant-coefficient mixing, for the eager rows too
        built["floor"] = floor_contender(n, x, grad, compiled=cfg.floor_compiled, seed=cfg.seed)
    if "residual" in cfg.kinds:
        built["residual"] = residual_contender(x, grad)
    return {name: pair for name, pair in built.items() if name not in cfg.skip}


def run_layer_bench(cfg: LayerBenchConfig, log: Callable[[str], None] = print) -> list[dict]:
    """Every configuration of ``cfg``; one row per (configuration, contender)."""
    cfg.validate()
    rows: list[dict] = []
    use_package = cfg.package and package_available()
    for n, dim, dtype_name, mode in itertools.product(cfg.num_streams, cfg.dims, cfg.dtypes, cfg.modes):
        compiled = mode == "compiled"
        torch._dynamo.reset()  # fresh compile caches for every configuration
        # one compiled module per contender shares HyperConnection.forward's code object: each is a
        # recompile of it (the default limit of 8 would fail fullgraph=True)
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
        x, grad = _inputs(cfg.tokens, n, dim, DTYPES[dtype_name], cfg.seed)
        built = build_contenders(cfg, n, x, grad, compiled, use_package)
        log(f"layer: n={n} C={dim} {dtype_name} {mode}: {len(built)} contenders x {cfg.repeats} rounds")
        timings = interleaved_medians({k: v[0] for k, v in built.items()}, cfg.repeats, cfg.warmup)
        for name, t in timings.items():
            saved = saved_activation_bytes(built[name][1])
            rows.append(
                dict(
                    bench="layer",
                    n=n,
                    dim=dim,
                    dtype=dtype_name,
                    mode=mode,
                    tokens=cfg.tokens,
                    contender=name,
                    saved_mib=saved / 2**20,
                    **t,
                )
            )
    return rows


def add_ratios(rows: list[dict]) -> list[dict]:
    """Per configuration: each contender's median over the floor's, and the naive/package
    references' medians over the library kind's (``speedup_vs_naive``, ``speedup_vs_pkg_mhc``)."""
    groups: dict[tuple, dict[str, dict]] = {}
    for row in rows:
        groups.setdefault((row["n"], row["dim"], row["dtype"], row["mode"]), {})[row["contender"]] = row
    for group in groups.values():
        floor = group.get("floor")
        pkg_mhc = group.get("hyper-connections:mhc")
        for name, row in group.items():
            if floor:
                row["x_floor"] = row["median_ms"] / floor["median_ms"]
            naive = group.get(f"naive:{name}")
            if naive:
                row["speedup_vs_naive"] = naive["median_ms"] / row["median_ms"]
            if pkg_mhc and ":" not in name and name != "floor":
                row["speedup_vs_pkg_mhc"] = pkg_mhc["median_ms"] / row["median_ms"]
    return rows


def config_dict(cfg: LayerBenchConfig) -> dict:
    return asdict(cfg)
