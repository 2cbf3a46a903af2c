"""The gradient-free path (``width_inference``, parameter-derived tensors) equals the autograd
path, after every way of writing the parameters (fused optimizers and ``.data`` included)."""

import copy

import pytest
import torch
from tests.support import perturbed_connection

import hyperconn
from hyperconn.connections.reference import naive_forward
from hyperconn.model import ConnectionConfig, LanguageModel, ModelConfig

CASES = [
    (kind, n)
    for kind in hyperconn.available_connections()
    for n in (1, 2, 3, 4, 8)
    if not (kind == "mhc_lite" and n == 8)
    and (kind == "residual") == (n == 1)  # one rule: residual has one stream, every other kind >= 2
    and not (kind == "kromhc" and n == 3)
]


def _perturbed(kind: str, n: int, dim: int = 24, seed: int = 0, scale: float = 0.3) -> torch.nn.Module:
    return perturbed_connection(kind, n, dim, scale=scale, seed=seed)


def _branch(u: torch.Tensor) -> torch.Tensor:
    return torch.tanh(u) * 1.5 + 0.1


@pytest.mark.parametrize(("kind", "n"), CASES)
# make test-fast: the decode (1, 1) and prefill (2, 5) shapes
@pytest.mark.parametrize("lead", [(1, 1), pytest.param((3,), marks=pytest.mark.slow), (2, 5)])
def test_inference_width_equals_autograd_path(kind, n, lead):
    conn = _perturbed(kind, n)
    x = torch.randn(*lead, n, 24)
    with torch.enable_grad():
        expected = conn.width(x.clone().requires_grad_(True))
        expected_out = conn(x.clone().requires_grad_(True), _branch)
    with torch.no_grad():
        got = conn.width(x)
        got_out = conn(x, _branch)
    for e, g in zip(expected, got, strict=True):
        assert g.shape == e.shape and g.dtype == e.dtype
        torch.testing.assert_close(g, e.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_out, expected_out.detach(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("kind", "n"), [c for c in CASES if c[0] != "residual"])
def test_inference_matches_naive_reference_in_float64(kind, n):
    conn = _perturbed(kind, n, seed=1, scale=0.5).double()
    x = torch.randn(4, n, 24, dtype=torch.float64)
    with torch.no_grad():
        got = conn(x, _branch)
        expected = naive_forward(conn, x, _branch)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kind", ["hc", "mhc", "kromhc", "shc"])
def test_inference_bfloat16_streams_match_autograd_path(kind):
    conn = _perturbed(kind, 4)
    x = torch.randn(6, 4, 24).bfloat16()
    with torch.enable_grad():
        expected = conn(x.clone().requires_grad_(True), _branch).detach()
    with torch.no_grad():
        got = conn(x, _branch)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), expected.float(), rtol=1e-2, atol=2e-2)


def _writes(conn: torch.nn.Module, x: torch.Tensor):
    """Every way a user's code writes a connection's parameters, one after the other: the ones
    that bump ``_version`` and the ones that do not (fused AdamW, ``.data`` edits)."""
    with torch.no_grad():  # an in-place write (what the default optimizers do)
        for p in conn.parameters():
            p.mul_(1.1).add_(0.05)
    yield "in-place mul_/add_"
    conn.load_state_dict(_perturbed(conn.kind, conn.num_streams, seed=7).state_dict())
    yield "load_state_dict"
    for fused in (False, True):
        opt = torch.optim.AdamW(conn.parameters(), lr=0.05, fused=fused)
        conn(x.clone().requires_grad_(True), _branch).square().sum().backward()
        opt.step()
        opt.zero_grad()
        yield f"AdamW(fused={fused}) step"
    for p in conn.parameters():
        p.data.add_(0.5)  # .data: no version counter
    yield ".data.add_"
    first = next(conn.parameters())
    first.data = first.data + 0.25  # .data rebound to new storage
    yield ".data = ..."
    conn.reset_parameters()
    yield "reset_parameters"
    other = _perturbed(conn.kind, conn.num_streams, seed=9)  # a parameter replaced by another tensor
    for name, p in other.named_parameters():
        setattr(conn, name, p)
    yield "parameters replaced"


@pytest.mark.parametrize("kind", ["hc", "mhc", "mhc_lite", "kromhc", "shc"])
@pytest.mark.parametrize("mode", ["no_grad", "inference_mode", "frozen_parameters"])
def test_no_grad_output_follows_every_parameter_write(kind, mode):
    """Evaluation never runs on stale weights, whatever wrote them: after each write, the no-grad
    (or inference-mode) output equals the autograd path's. Inside a ``frozen_parameters`` scope the
    values are cached for the scope; every write here happens between scopes."""
    conn = _perturbed(kind, 4)
    x = torch.randn(5, 4, 24)

    def check(what):
        with torch.enable_grad():
            expected = conn(x.clone().requires_grad_(True), _branch).detach()
        context = {"no_grad": torch.no_grad, "inference_mode": torch.inference_mode}.get(mode)
        for _ in range(2):  # the second call is where a cache would answer
            if context is None:
                with torch.inference_mode(), hyperconn.frozen_parameters(conn):
                    got = conn(x, _branch)
            else:
                with context():
                    got = conn(x, _branch)
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5, msg=lambda m: f"after {what}: {m}")

    check("nothing")
    for what in _writes(conn, x):
        check(what)


def test_frozen_parameters_builds_once_and_drops_its_cache_on_exit(monkeypatch):
    conn = _perturbed("shc", 4)
    x = torch.randn(1, 1, 4, 24)
    builds = []
    original = type(conn).inference_constants

    def counting(self, dtype):
        builds.append(dtype)
        return original(self, dtype)

    monkeypatch.setattr(type(conn), "inference_constants", counting)
    with torch.no_grad():
        conn(x, _branch)
        conn(x, _branch)
        assert len(builds) == 2  # no scope: built on every call
        with hyperconn.frozen_parameters(conn):
            for _ in range(5):
                conn(x, _branch)
            with hyperconn.frozen_parameters(conn):  # nested: the outer scope owns the cache
                conn(x, _branch)
            conn(x.double(), _branch)  # another dtype: its own entry
        assert len(builds) == 4
        conn.bias.data.add_(1.0)  # a write the version counter does not see, after the scope
        with hyperconn.frozen_parameters(conn):
            after = conn(x, _branch)
    with torch.enable_grad():
        expected = conn(x.clone().requires_grad_(True), _branch).detach()
    assert len(builds) == 5
    torch.testing.assert_close(after, expected, rtol=1e-5, atol=1e-5)


class _UserModel(torch.nn.Module):
    """A user's own model: two MLP blocks wrapped by ``make_connection`` connections."""

    def __init__(self, kind: str, n: int = 4, dim: int = 24, vocab: int = 40) -> None:
        super().__init__()
        self.n = n
        self.embed = torch.nn.Embedding(vocab, dim)
        self.conns = torch.nn.ModuleList(
            [hyperconn.make_connection(kind, n, dim, layer_index=i) for i in range(2)]
        )
        self.mlps = torch.nn.ModuleList(
            [torch.nn.Sequential(torch.nn.Linear(dim, 2 * dim), torch.nn.GELU(), torch.nn.Linear(2 * dim, dim))
             for _ in range(2)]
        )
        self.head = torch.nn.Linear(dim, vocab)

    def forward(self, idx):
        x = hyperconn.expand_streams(self.embed(idx), self.n)
        for conn, mlp in zip(self.conns, self.mlps, strict=True):
            x = conn(x, mlp)
        return self.head(hyperconn.reduce_streams(x))


def _loss(model, idx):
    logits = model(idx[:, :-1])
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), idx[:, 1:].reshape(-1))


@pytest.mark.parametrize("kind", ["mhc", "shc"])
def test_a_make_connection_model_trained_with_fused_adamw_evaluates_its_current_weights(kind):
    """The reported case: a model built from ``make_connection`` trained with fused AdamW (which
    leaves ``_version`` alone), evaluated under ``no_grad`` between steps, as a training loop does."""
    torch.manual_seed(0)
    model = _UserModel(kind)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-2, fused=True)
    data = torch.randint(40, (8, 17))
    for step in range(12):
        _loss(model, data).backward()
        opt.step()
        opt.zero_grad()
        if step % 4 == 3:
            with torch.no_grad():
                evaluated = _loss(model, data)
            with torch.enable_grad():
                truth = _loss(model, data).detach()
            torch.testing.assert_close(evaluated, truth, rtol=1e-6, atol=1e-6)


def test_cached_path_is_never_used_under_autograd():
    conn = _perturbed("shc", 4)
    x = torch.randn(3, 4, 24)
    with torch.no_grad():
        conn(x, _branch)  # cache built
    out = conn(x, _branch)
    assert out.requires_grad
    out.sum().backward()
    grads = {name: p.grad for name, p in conn.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    fresh = copy.deepcopy(conn)
    for p in fresh.parameters():
        p.grad = None
    fresh(x, _branch).sum().backward()
    for name, p in fresh.named_parameters():
        torch.testing.assert_close(p.grad, grads[name])


@pytest.mark.parametrize("kind", ["hc", "mhc", "mhc_lite", "kromhc", "shc"])
def test_cached_decode_equals_full_forward(kind):
    cfg = ModelConfig(dim=32, n_layers=2, n_heads=2, n_kv_heads=1, head_dim=16, mlp_dim=64, max_seq_len=32,
                      vocab_size=50, connection=ConnectionConfig(kind=kind, num_streams=4))
    torch.manual_seed(0)
    model = LanguageModel(cfg)
    with torch.no_grad():  # move the connections off their (nearly trivial) init
        for conn in model.connections():
            for p in conn.parameters():
                p.add_(0.2 * torch.randn_like(p))
    model.eval()
    idx = torch.randint(50, (1, 12))
    full = model(idx).detach()  # grad enabled: the autograd path, no cache
    with torch.no_grad():
        cache = model.new_cache(1)
        steps = [model(idx[:, :5], 0, cache)]
        for t in range(5, 12):
            steps.append(model(idx[:, t : t + 1], t, cache))
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", ["hc", "mhc", "kromhc", "shc"])
def test_a_subclass_that_changes_the_math_gets_it_in_eval_too(kind):
    base = type(hyperconn.make_connection(kind, 4, 24))

    class Doubled(base):  # a user's variant: every H_res entry doubled
        def mixing(self, streams):
            pre, res, post = super().mixing(streams)
            return hyperconn.Mixing(pre, 2 * res, post)

    conn = Doubled(4, 24)
    x = torch.randn(3, 4, 24)
    with torch.enable_grad():
        expected = conn(x.clone().requires_grad_(True), _branch).detach()
    with torch.no_grad():
        torch.testing.assert_close(conn(x, _branch), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", hyperconn.available_connections())
def test_fast_paths_are_chosen_by_exact_type(kind):
    """The registered class is ``exact_kind``; any subclass (even one that changes nothing) is
    not, and gets the generic paths from ``mixing``: the same values as the lean path."""
    n = 1 if kind == "residual" else 4
    conn = _perturbed(kind, n)
    assert conn.exact_kind

    class Same(type(conn)):
        pass

    other = Same(n, 24, layer_index=1)
    assert not other.exact_kind
    other.load_state_dict(conn.state_dict())
    x = torch.randn(3, n, 24)
    with torch.no_grad():
        torch.testing.assert_close(other(x, _branch), conn(x, _branch), rtol=1e-5, atol=1e-5)
