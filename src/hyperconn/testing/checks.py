"""The conformance checks: each takes a :class:`~hyperconn.testing.subject.Subject`, returns what
it measured, raises :class:`CheckFailed` naming the broken property or :class:`CheckSkipped`
saying why it does not apply. :data:`CHECKS` lists them in the order they run."""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import Callable

import torch
from torch.autograd.gradcheck import GradcheckError
from torch.func import functional_call

from ..connections.inference import frozen_parameters
from ..connections.invariants import INVARIANTS, closure, violations
from .report import CheckFailed, CheckSkipped
from .subject import LAYER_INDEX, Subject, accepts_option, close, max_abs, rel_err, run_with_grads

# float64 checks: exact math agrees to rounding (~1e-16 relative); 1e-10 leaves room for
# ill-conditioned steps (a Cayley solve, 20 Sinkhorn rounds) and catches any real difference
INVARIANT_TOL = 1e-10
INIT_TOL = 1e-12
FORMULA_TOL = 1e-10
NO_GRAD_TOL = 1e-10
RECOMPUTE_TOL = 1e-12
# float32 streams under bf16 autocast: one bf16 rounding anywhere costs ~2^-9 = 2e-3 relative,
# float32 reassociation ~1e-7; 1e-5 is 100x from both
AUTOCAST_TOL = 1e-5
GRADCHECK_FULL_MAX = 1500  # input elements: mHC n = 4, dim = 8 has ~900 (about a second)
# torch.compile (Inductor, float32) fuses and reorders reductions: ~1e-6 relative
COMPILE_TOL = 1e-4


def _compare(pairs, tol: float, differs: str, sides: tuple[str, str]) -> float:
    """Each ``(what, got, expected)`` within ``tol`` (both None is fine: no gradient either way);
    fails naming every pair that is not; returns the worst error."""
    problems, worst = [], 0.0
    for what, a, b in pairs:
        if (a is None) != (b is None):
            missing = sides[0] if a is None else sides[1]
            problems.append(f"{what}: {missing} gives no gradient, the other does")
            continue
        if a is None:
            continue
        ok, err = close(a, b, tol)
        worst = max(worst, err)
        if not ok:
            problems.append(f"{what} {differs}: max error {err:.3g} > {tol:g}")
    _fail_if(problems)
    return worst


def _fail_if(problems: list[str]) -> None:
    if problems:
        raise CheckFailed("; ".join(problems))


def _check_mixing_shapes(s: Subject, mixing, lead: tuple[int, ...], dtype: torch.dtype) -> None:
    n = s.num_streams
    expected = {"pre": (*lead, n), "res": (*lead, n, n), "post": (*lead, n)}
    problems = []
    for name, t in zip(("pre", "res", "post"), mixing, strict=True):
        if tuple(t.shape) != expected[name]:
            problems.append(f"mixing().{name} has shape {tuple(t.shape)}, expected {expected[name]}")
        elif t.dtype != dtype:
            problems.append(f"mixing().{name} is {t.dtype}, expected {dtype}")
    _fail_if(problems)


def check_invariants(s: Subject) -> str:
    """Every declared invariant (and every one it implies) holds to 1e-10 in float64 for random
    inputs, at init and for two random draws of the parameters."""
    names = closure(s.cls.invariants)
    if not names:
        raise CheckSkipped("the kind declares no invariants (invariants = ())")
    worst = dict.fromkeys(names, 0.0)
    draws = ((None, 0), (0.5, 0), (2.0, 1))  # (perturbation scale, seed offset): init, moderate, large
    for scale, offset in draws:
        module = s.build(scale=scale, seed_offset=offset)
        x = 2 * s.streams(4, 8, seed_offset=offset)
        with torch.no_grad():
            mixing = module.mixing(x)
        _check_mixing_shapes(s, mixing, (4, 8), torch.float64)
        for name, v in violations(names, mixing.res).items():
            value = v.max().item()
            worst[name] = value if value != value else max(worst[name], value)  # keep a NaN
    _fail_if([
        f"{name} ({INVARIANTS[name].statement}): max violation = {v:.3g} > {INVARIANT_TOL:g}"
        for name, v in worst.items() if not v <= INVARIANT_TOL
    ])
    return ", ".join(f"{name} {v:.1e}" for name, v in worst.items())


def check_init(s: Subject) -> str:
    """``H_res`` of a freshly built module equals ``initial_res()`` to 1e-12 for random inputs."""
    module = s.build(scale=None)
    expected = module.initial_res()
    if expected is None:
        raise CheckSkipped("initial_res() is None: the kind does not fix H_res at init")
    n = s.num_streams
    if tuple(expected.shape) != (n, n):
        raise CheckFailed(f"initial_res() has shape {tuple(expected.shape)}, expected ({n}, {n})")
    x = 3 * s.streams(3, 5)
    with torch.no_grad():
        res = module.mixing(x).res
    err = max_abs(res, expected.to(res.dtype).expand_as(res))
    if not err <= INIT_TOL:
        raise CheckFailed(
            f"H_res at init differs from initial_res(): max |H_res - initial_res()| = {err:.3g} > {INIT_TOL:g}"
        )
    return f"max |H_res - initial_res()| = {err:.1e}"


def formula(mixing, x: torch.Tensor, branch) -> torch.Tensor:
    """``x'_j = sum_i H_res[i, j] x_i + H_post[j] F(sum_i H_pre[i] x_i)`` from ``mixing``."""
    pre, res, post = mixing
    u = torch.einsum("...s,...sc->...c", pre, x)
    return torch.einsum("...st,...sc->...tc", res, x) + post[..., None] * branch(u)[..., None, :]


def check_formula(s: Subject) -> str:
    """``forward`` and its gradients (streams and every parameter) equal the formula built from
    the kind's own ``mixing``, differentiated by autograd, to 1e-10 in float64."""
    module, branch = s.build(), s.branch()
    x = s.streams(2, 3)
    out, dx, grads = run_with_grads(module, x, branch, s.grad_output)

    def plain(x_, b):
        mixing = module.mixing(x_)
        _check_mixing_shapes(s, mixing, (2, 3), torch.float64)
        return formula(mixing, x_, b)

    ref_out, ref_dx, ref_grads = run_with_grads(module, x, branch, s.grad_output, call=plain)
    pairs = [("forward", out, ref_out), ("grad streams", dx, ref_dx)]
    pairs += [(f"grad {name}", grads[name], ref_grads[name]) for name in grads]
    worst = _compare(pairs, FORMULA_TOL, "differs from the mixing formula's", ("forward", "the formula"))
    return f"forward and {1 + len(grads)} gradients, max error {worst:.1e}"


def check_gradcheck(s: Subject) -> str:
    """``torch.autograd.gradcheck`` (float64) of ``forward(x, F)`` with respect to the streams and
    every parameter: the backward the kind runs equals finite differences. The full Jacobian up to
    :data:`GRADCHECK_FULL_MAX` input elements, gradcheck's fast mode (random projections) beyond."""
    module, branch = s.build(scale=0.3), s.branch()
    named = [(name, p) for name, p in module.named_parameters() if p.requires_grad]
    names = [name for name, _ in named]
    inputs = (s.streams(2).requires_grad_(True), *(p.detach().clone().requires_grad_(True) for _, p in named))

    def fn(x, *params):
        return functional_call(module, dict(zip(names, params, strict=True)), (x, branch))

    size = sum(t.numel() for t in inputs)
    fast = size > GRADCHECK_FULL_MAX  # the full Jacobian costs 2 forwards per input element
    try:
        torch.autograd.gradcheck(fn, inputs, fast_mode=fast)
    except GradcheckError as err:
        legend = ", ".join(f"{i} = {name}" for i, name in enumerate(["streams", *names]))
        first = str(err).strip().splitlines()[0]
        raise CheckFailed(f"backward differs from finite differences: {first} (inputs: {legend})") from None
    mode = "fast mode (random projections)" if fast else "full Jacobian"
    return f"streams and {len(names)} parameters, {size} elements, {mode}"


def check_gradients(s: Subject) -> str:
    """One backward through perturbed float32 parameters gives every parameter a finite gradient
    (DDP with ``find_unused_parameters=False`` needs each one used)."""
    module = s.build(torch.float32)
    _, dx, grads = run_with_grads(module, s.streams(2, 3, dtype=torch.float32), s.branch(torch.float32),
                                  s.grad_output)
    trainable = {name for name, p in module.named_parameters() if p.requires_grad}
    missing = [name for name in grads if name in trainable and grads[name] is None]
    bad = [name for name in grads if grads[name] is not None and not torch.isfinite(grads[name]).all()]
    problems = []
    if missing:
        problems.append(f"no gradient for parameter(s) {', '.join(missing)} (unused in forward: DDP fails)")
    if bad:
        problems.append(f"non-finite gradient for {', '.join(bad)}")
    if not torch.isfinite(dx).all():
        problems.append("non-finite gradient for the streams")
    _fail_if(problems)
    return f"{len(trainable)} parameters" if trainable else "no parameters"


def check_autocast(s: Subject) -> str:
    """With the forward under CPU bf16 autocast (the backward outside it, as ``torch.autocast``
    prescribes), float32 streams stay float32, forward and every gradient equal the float32
    computation to 1e-5 relative (a bf16 rounding costs ~2e-3), and ``mixing`` is float32 for
    float32 and bf16 streams."""
    module = s.build(torch.float32, scale=0.3)
    x, branch = s.streams(3, 5, dtype=torch.float32), s.branch(torch.float32)
    ref = run_with_grads(module, x, branch, s.grad_output, forward_context=lambda: torch.autocast("cpu", enabled=False))
    # forward under autocast, backward outside it (as torch.autocast's documentation prescribes)
    got = run_with_grads(module, x, branch, s.grad_output,
                         forward_context=lambda: torch.autocast("cpu", dtype=torch.bfloat16))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        coef_dtypes = {str(dt): [t.dtype for t in module.mixing(x.to(dt))] for dt in (torch.float32, torch.bfloat16)}
    problems, worst = [], 0.0
    pairs = [("output", got[0], ref[0]), ("grad streams", got[1], ref[1])]
    pairs += [(f"grad {name}", got[2][name], ref[2][name]) for name in ref[2] if ref[2][name] is not None]
    for what, a, b in pairs:
        if a is None:
            problems.append(f"{what}: none under autocast")
            continue
        if a.dtype != torch.float32:
            problems.append(f"{what} is {a.dtype} under autocast, expected torch.float32")
            continue
        err = rel_err(a, b)
        worst = max(worst, err)
        if not err <= AUTOCAST_TOL:
            problems.append(
                f"{what} under bf16 autocast differs from float32: relative error {err:.3g} > {AUTOCAST_TOL:g}"
            )
    for dt, dtypes in coef_dtypes.items():
        if any(d != torch.float32 for d in dtypes):
            problems.append(f"mixing() of {dt} streams under autocast gives {dtypes}, expected float32")
    _fail_if(problems)
    return f"max relative error {worst:.1e}"


def check_no_grad(s: Subject) -> str:
    """Under ``torch.no_grad``, ``torch.inference_mode`` and inside ``frozen_parameters`` (the
    decode path), ``forward`` and ``width`` equal the grad path to 1e-10 in float64, for one
    token ``(1, 1)`` and a batch ``(2, 5)``."""
    module, branch = s.build(), s.branch()
    problems, worst = [], 0.0
    for lead in ((1, 1), (2, 5)):
        x = s.streams(*lead, seed_offset=len(lead) + lead[-1])
        ref = [module(x, branch).detach(), *(t.detach() for t in module.width(x))]
        modes: list[tuple[str, Callable]] = [("no_grad", torch.no_grad), ("inference_mode", torch.inference_mode)]
        for mode, ctx in modes:
            with ctx():
                got = [module(x, branch), *module.width(x)]
            err = _compare_steps(ref, got, problems, f"{mode} {lead}")
            worst = max(worst, err)
        with frozen_parameters(module), torch.no_grad():
            for call in ("first", "second"):  # the second call reads the cached constants
                got = [module(x, branch), *module.width(x)]
                worst = max(worst, _compare_steps(ref, got, problems, f"frozen_parameters {lead} {call} call"))
    _fail_if(problems)
    return f"max error {worst:.1e}"


def _compare_steps(ref, got, problems: list[str], where: str) -> float:
    worst = 0.0
    for what, a, b in zip(("forward", "width u", "width mixed", "width h_post"), got, ref, strict=True):
        ok, err = close(a, b, NO_GRAD_TOL)
        worst = max(worst, err)
        if not ok:
            problems.append(f"{what} under {where} differs from the grad path: max error {err:.3g} > {NO_GRAD_TOL:g}")
    return worst


def check_recompute(s: Subject) -> str:
    """A module built with ``recompute=True`` gives the same forward and gradients as one
    without, to 1e-12 in float64."""
    if not accepts_option(s.cls, "recompute"):
        raise CheckSkipped("the class takes no recompute option")
    plain, again = s.build(recompute=False), s.build(recompute=True)
    again.load_state_dict(plain.state_dict())
    x, branch = s.streams(2, 3), s.branch()
    ref = run_with_grads(plain, x, branch, s.grad_output)
    got = run_with_grads(again, x, branch, s.grad_output)
    pairs = [("forward", got[0], ref[0]), ("grad streams", got[1], ref[1])]
    pairs += [(f"grad {name}", got[2][name], ref[2][name]) for name in ref[2]]
    worst = _compare(pairs, RECOMPUTE_TOL, "with recompute=True differs", ("recompute=True", "recompute=False"))
    return f"max error {worst:.1e}"


@torch.no_grad()
def _poison(module: torch.nn.Module) -> None:
    """Fill every parameter and buffer with NaN (integers with -1): what ``reset_parameters``
    leaves unset cannot pass as initialised by chance."""
    for t in [*module.parameters(), *module.buffers()]:
        t.fill_(float("nan") if t.is_floating_point() else -1)


def check_meta_build(s: Subject) -> str:
    """Built on the meta device, ``to_empty(device="cpu")`` then ``reset_parameters()`` gives
    exactly the parameters, buffers and forward of a plain build."""
    plain = s.build(dtype=None, scale=None)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(s.seed)
        with torch.device("meta"):
            deferred = s.cls(s.num_streams, s.dim, layer_index=LAYER_INDEX, **s.options)
        deferred.to_empty(device="cpu")
        _poison(deferred)
        torch.manual_seed(s.seed)
        deferred.reset_parameters()
    want = {**dict(plain.named_parameters()), **dict(plain.named_buffers())}
    got = {**dict(deferred.named_parameters()), **dict(deferred.named_buffers())}
    problems = []
    if want.keys() != got.keys():
        problems.append(f"tensors differ: plain build only {sorted(want.keys() - got.keys())}, "
                        f"meta build only {sorted(got.keys() - want.keys())}")
    for name in sorted(want.keys() & got.keys()):
        a, b = got[name], want[name]
        if a.dtype != b.dtype or a.shape != b.shape:
            problems.append(
                f"{name}: {a.dtype} {tuple(a.shape)} after the meta build, {b.dtype} {tuple(b.shape)} plain"
            )
        elif not torch.equal(a, b):
            unset = "NaN (reset_parameters does not set it)" if a.is_floating_point() and a.isnan().any() else \
                f"max difference {max_abs(a, b):.3g}"
            problems.append(f"{name} after to_empty + reset_parameters differs from a plain build: {unset}")
    if not problems:
        x, branch = s.streams(2, 3, dtype=torch.float32), s.branch(torch.float32)
        if not torch.equal(deferred(x, branch), plain(x, branch)):
            problems.append("forward of the meta-built module differs from a plain build's")
    _fail_if(problems)
    return f"{len(want)} tensors equal"


def check_state_dict(s: Subject) -> str:
    """``state_dict`` saved with ``torch.save``, loaded (``weights_only=True``, strict) into a
    module with other parameter values, gives identical ``forward`` and ``mixing``."""
    source, target = s.build(scale=0.5), s.build(scale=0.5, seed_offset=7)
    buffer = io.BytesIO()
    torch.save(source.state_dict(), buffer)
    buffer.seek(0)
    target.load_state_dict(torch.load(buffer, weights_only=True))
    x, branch = s.streams(2, 3), s.branch()
    with torch.no_grad():
        pairs = [("forward", target(x, branch), source(x, branch))]
        pairs += list(zip(("mixing pre", "mixing res", "mixing post"), target.mixing(x), source.mixing(x), strict=True))
    _fail_if([f"{what} after the round trip differs: max difference {max_abs(a, b):.3g}"
              for what, a, b in pairs if not torch.equal(a, b)])
    return f"{len(source.state_dict())} entries"


def compiler_available() -> str | None:
    """The C++ compiler Inductor's CPU backend would use, or None."""
    for name in (os.environ.get("CXX"), "g++", "clang++", "c++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def check_compile(s: Subject) -> str:
    """``torch.compile(module, fullgraph=True)``: forward and every gradient equal eager to 1e-4
    relative (float32; Inductor reorders reductions). Resets torch._dynamo's caches first."""
    if compiler_available() is None:
        raise CheckSkipped("no C++ compiler found (g++, clang++, c++ or $CXX): Inductor cannot build CPU code")
    module = s.build(torch.float32, scale=0.3)
    x, branch = s.streams(2, 5, dtype=torch.float32), s.branch(torch.float32)
    ref = run_with_grads(module, x, branch, s.grad_output)
    torch._dynamo.reset()
    compiled = torch.compile(module, fullgraph=True)
    got = run_with_grads(module, x, branch, s.grad_output, call=compiled)
    problems, worst = [], 0.0
    pairs = [("forward", got[0], ref[0]), ("grad streams", got[1], ref[1])]
    pairs += [(f"grad {name}", got[2][name], ref[2][name]) for name in ref[2] if ref[2][name] is not None]
    for what, a, b in pairs:
        if a is None:
            problems.append(f"{what}: none when compiled")
            continue
        err = rel_err(a, b)
        worst = max(worst, err)
        if not err <= COMPILE_TOL:
            problems.append(f"{what} compiled differs from eager: relative error {err:.3g} > {COMPILE_TOL:g}")
    _fail_if(problems)
    return f"max relative error {worst:.1e}"


CHECKS: dict[str, Callable[[Subject], str]] = {
    "invariants": check_invariants,
    "init": check_init,
    "formula": check_formula,
    "gradcheck": check_gradcheck,
    "gradients": check_gradients,
    "autocast": check_autocast,
    "no_grad": check_no_grad,
    "recompute": check_recompute,
    "meta_build": check_meta_build,
    "state_dict": check_state_dict,
    "compile": check_compile,
}
"""Every check by name, in the order :func:`~hyperconn.testing.check_connection` runs them."""

SLOW_CHECKS: tuple[str, ...] = ("compile",)
"""Checks that take seconds (``torch.compile``); leave them out with ``checks=FAST_CHECKS``."""

FAST_CHECKS: tuple[str, ...] = tuple(name for name in CHECKS if name not in SLOW_CHECKS)
