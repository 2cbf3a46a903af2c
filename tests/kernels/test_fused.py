"""The fused Triton width/depth (under the CPU interpreter) against the PyTorch path.

Errors are max abs differences relative to max(1, max |reference|).
- float32: fused vs PyTorch within 2e-5 for values, 5e-5 for gradients (exact float32 dots under
  the interpreter; the rest is the order of float32 sums). Measured: below 3e-6.
- bfloat16 streams: both paths compute in float32 and round to bfloat16 where their outputs are
  stored, but not at the same places, and parameter gradients summed over tokens can cancel, so
  the criterion is against the float32 truth (same parameters, float32 streams): the fused error
  must be at most 1.5 times the PyTorch bf16 path's error plus 1e-3. Measured (n = 2, 3, 4): the
  fused and PyTorch errors agree to two digits (values 8e-4 to 4e-3, gradients 4e-4 to 8e-3).
  (conftest makes the interpreter round float32 -> bfloat16 to nearest, as a GPU does.)
"""

from __future__ import annotations

import pytest
import torch
from tests.support import perturbed_connection

import hyperconn
import hyperconn.connections
from hyperconn import kernels

C = 40  # not a multiple of the 32-wide feature blocks set in conftest
FP32_TOL = (2e-5, 5e-5)
BF16_FACTOR, BF16_FLOOR = 1.5, 1e-3


def perturbed(kind: str, n: int, seed: int = 0, **options):
    """A width-``C`` connection with every parameter moved off its init by N(0, 0.5^2) noise."""
    return perturbed_connection(kind, n, C, scale=0.5, seed=seed, **options)


def layer(width, depth, conn, streams, weight):
    """width -> a nonlinear branch -> depth."""
    u, mixed, h_post = width(conn, streams)
    out = depth(conn, mixed, h_post, torch.tanh(u) * weight)
    return u, mixed, h_post, out


def torch_width(conn, streams):
    conn.backend = "torch"
    return conn.width(streams)


def torch_depth(conn, mixed, h_post, branch_out):
    conn.backend = "torch"
    return conn.depth(mixed, h_post, branch_out)


def fused_width(conn, streams):
    return kernels.width(conn.kernel_spec(), streams)


def fused_depth(conn, mixed, h_post, branch_out):
    return kernels.depth(mixed, h_post, branch_out)


def rel_err(got, ref):
    err = (got.float() - ref.float()).abs().max().item()
    return err / max(1.0, ref.float().abs().max().item())


def run(width, depth, conn, streams, weight, grad_out):
    """Outputs of width/branch/depth and the gradients of streams, branch weight and parameters."""
    streams = streams.detach().requires_grad_()
    weight = weight.detach().requires_grad_()
    outs = layer(width, depth, conn, streams, weight)
    inputs = [streams, weight, *conn.parameters()]
    grads = torch.autograd.grad(outs[-1], inputs, grad_out, allow_unused=True, materialize_grads=True)
    names = ["u", "mixed", "h_post", "new streams", "d streams", "d branch weight"]
    names += [f"d {name}" for name, _ in conn.named_parameters()]
    return dict(zip(names, (*outs, *grads), strict=True))


def check_against_pytorch(conn, lead, dtype):
    n = conn.num_streams
    gen = torch.Generator().manual_seed(1)
    streams = torch.randn(*lead, n, C, generator=gen).to(dtype)
    weight = torch.randn(C, generator=gen).to(dtype)
    grad_out = torch.randn(*lead, n, C, generator=gen).to(dtype)
    fused = run(fused_width, fused_depth, conn, streams, weight, grad_out)
    ref = run(torch_width, torch_depth, conn, streams, weight, grad_out)
    for name, got in fused.items():
        assert got.shape == ref[name].shape and got.dtype == ref[name].dtype, name
    if dtype == torch.float32:
        for name, got in fused.items():
            tol = FP32_TOL[name.startswith("d ")]
            assert rel_err(got, ref[name]) <= tol, f"{name}: {rel_err(got, ref[name]):.2e} > {tol:.0e}"
        return
    truth = run(torch_width, torch_depth, conn, streams.float(), weight.float(), grad_out.float())
    for name, got in fused.items():
        err, ref_err = rel_err(got, truth[name]), rel_err(ref[name], truth[name])
        assert err <= BF16_FACTOR * ref_err + BF16_FLOOR, f"{name}: fused {err:.2e} vs PyTorch {ref_err:.2e}"


@pytest.mark.parametrize(
    ("kind", "n", "lead"),
    [
        # one case (hc, the mixing kernel alone) in the fast set; the interpreted kernels take seconds
        pytest.param("shc", 2, (2, 7), marks=pytest.mark.slow),
        pytest.param("shc", 3, (19,), marks=pytest.mark.slow),
        pytest.param("shc", 4, (2, 7), marks=pytest.mark.slow),
        pytest.param("shc", 4, (19,), marks=pytest.mark.slow),
        # n > 4: projection kernel + PyTorch coefficients + mixing kernel
        pytest.param("shc", 5, (13,), marks=pytest.mark.slow),
        pytest.param("mhc", 4, (13,), marks=pytest.mark.slow),
        pytest.param("mhc_lite", 3, (13,), marks=pytest.mark.slow),
        pytest.param("kromhc", 4, (13,), marks=pytest.mark.slow),
        ("hc", 3, (13,)),
    ],
)
def test_fused_matches_pytorch_float32(kind, n, lead):
    check_against_pytorch(perturbed(kind, n), lead, torch.float32)


@pytest.mark.slow
def test_fused_shc_split_mix_matches_pytorch(monkeypatch):
    """The two-kernel variant (coefficients written, then mixed) gives the same results."""
    from hyperconn.kernels import fused_width

    monkeypatch.setattr(fused_width, "SPLIT_MIX", True)
    check_against_pytorch(perturbed("shc", 4), (19,), torch.float32)


@pytest.mark.parametrize("n", [2, 3, 4])
@pytest.mark.slow
def test_fused_shc_matches_pytorch_bfloat16(n):
    check_against_pytorch(perturbed("shc", n, seed=n), (19,), torch.bfloat16)


@pytest.mark.slow
def test_fused_shc_at_init_is_the_closed_form():
    """At init H_res = J + tanh(4)(I - J), H_pre/H_post the ±1-bias sigmoids, whatever the input."""
    n = 4
    conn = hyperconn.make_connection("shc", n, C, layer_index=2)
    streams = torch.randn(5, n, C)
    assert conn.kernel_spec().fused_shc
    u, mixed, h_post = fused_width(conn, streams)
    eye, centre = torch.eye(n), torch.full((n, n), 1.0 / n)
    res = centre + torch.tanh(torch.tensor(4.0)) * (eye - centre)
    bias = -torch.ones(n)
    bias[2] = 1.0
    torch.testing.assert_close(mixed, torch.einsum("st,bsd->btd", res, streams), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(u, torch.einsum("s,bsd->bd", torch.sigmoid(bias), streams), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(h_post, (2 * torch.sigmoid(bias)).expand(5, n))


def test_routes_follow_the_module():
    """fused sHC kernel only for sHC's own math at n = 3, 4; the projection kernel for the other
    coefficient kinds; the mixing kernel alone for hc."""
    assert perturbed("shc", 4).kernel_spec().route == "fused_shc"
    assert perturbed("shc", 3).kernel_spec().route == "fused_shc"
    assert perturbed("shc", 2).kernel_spec().route == "projection"
    assert perturbed("shc", 5).kernel_spec().route == "projection"
    assert perturbed("mhc", 4).kernel_spec().route == "projection"
    assert perturbed("hc", 3).kernel_spec().route == "mix"


class FlippedSHC(hyperconn.connections.SHC):
    """A subclass with its own residual matrix: the kernels must use ITS math, not sHC's."""

    def res_matrix(self, coefs):
        return super().res_matrix(coefs).transpose(-1, -2) * 0.5


class OwnMixingMHC(hyperconn.connections.MHC):
    """A subclass that changes how the coefficients are made (not just H_res)."""

    def mixing(self, streams):
        pre, res, post = super().mixing(streams)
        return hyperconn.Mixing(pre * 0.5, res, post + 1)


@pytest.mark.parametrize("cls,route", [(FlippedSHC, "mix"), (OwnMixingMHC, "mix")])  # subclasses: by exact type
@pytest.mark.slow
def test_subclass_math_is_what_the_kernels_compute(cls, route):
    conn = cls(4, C, layer_index=1)
    with torch.no_grad():
        for i, p in enumerate(conn.parameters()):
            p.add_(0.5 * torch.randn(p.shape, generator=torch.Generator().manual_seed(i)))
    assert conn.kernel_spec().route == route
    check_against_pytorch(conn, (13,), torch.float32)


@pytest.mark.parametrize("kind,n", [("shc", 4), ("mhc", 4), ("hc", 3)])
@pytest.mark.parametrize("recompute", [False, True])
@pytest.mark.slow
def test_triton_backend_module_equals_torch_backend(kind, n, recompute):
    """The whole module on backend='triton' (recompute honoured) vs backend='torch'."""
    conn = perturbed(kind, n, recompute=recompute)
    streams = torch.randn(11, n, C, generator=torch.Generator().manual_seed(3))
    results = {}
    for backend in ("torch", "triton"):
        conn.backend = backend
        conn.zero_grad(set_to_none=True)
        x = streams.clone().requires_grad_()
        out = conn(x, torch.tanh)
        out.square().sum().backward()
        results[backend] = [out.detach(), x.grad] + [p.grad for p in conn.parameters()]
    for got, ref in zip(results["triton"], results["torch"], strict=True):
        assert rel_err(got, ref) <= FP32_TOL[1]


@pytest.mark.slow
def test_recompute_on_triton_saves_only_the_streams():
    """Besides the streams, what is saved (parameters, constants) does not grow with the tokens."""
    conn = perturbed("shc", 4, recompute=True, backend="triton")

    def saved_besides_streams(tokens: int) -> int:
        x = torch.randn(tokens, 4, C, requires_grad=True)
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
            conn.width(x)
        assert any(t.data_ptr() == x.data_ptr() for t in saved)
        return sum(t.numel() for t in saved if t.data_ptr() != x.data_ptr())

    assert saved_besides_streams(9) == saved_besides_streams(90)


def test_triton_backend_refuses_what_it_cannot_launch(monkeypatch):
    with pytest.raises(ValueError, match="coefficients per token exceed"):
        perturbed("mhc_lite", 6, backend="triton").width(torch.randn(2, 6, C))
    with pytest.raises(ValueError, match="dtype torch.float64"):
        perturbed("shc", 4, backend="triton").width(torch.randn(2, 4, C, dtype=torch.float64))
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match="need a CUDA tensor"):
        perturbed("shc", 4, backend="triton").width(torch.randn(2, 4, C))


def test_auto_and_torch_never_call_kernels_on_cpu(monkeypatch):
    """CPU tensors take the PyTorch path on 'auto' and 'torch', even with the interpreter on."""

    def refuse(*args, **kwargs):
        raise AssertionError("hyperconn.kernels called for a CPU tensor")

    monkeypatch.setattr(kernels, "width", refuse)
    monkeypatch.setattr(kernels, "depth", refuse)
    for backend in ("auto", "torch"):
        with torch.no_grad():
            perturbed("shc", 4, backend=backend)(torch.randn(2, 5, 4, C), torch.tanh)


def test_auto_uses_only_validated_paths(monkeypatch):
    """On CUDA, 'auto' picks the kernels only for VALIDATED (route, kind, n, dtype), and says why
    otherwise."""
    x = torch.zeros(3, 4, C)
    monkeypatch.setattr(torch.Tensor, "is_cuda", property(lambda self: True))
    spec = perturbed("shc", 4).kernel_spec()
    with pytest.warns(UserWarning, match="not been validated"):
        assert not kernels.select("auto", spec, x)  # the shipped table is empty: PyTorch on CUDA
    table = {("fused_shc", "shc", 4): (torch.float32,), ("projection", "mhc", 4): (torch.bfloat16,)}
    monkeypatch.setattr(kernels, "VALIDATED", table)
    assert kernels.select("auto", spec, x)
    assert kernels.select("auto", perturbed("mhc", 4).kernel_spec(), x.bfloat16())
    with pytest.warns(UserWarning, match="not been validated"):
        assert not kernels.select("auto", perturbed("kromhc", 4).kernel_spec(), x)
    with pytest.warns(UserWarning, match="not been validated"):
        assert not kernels.select("auto", spec, x.half())
    with pytest.warns(UserWarning, match="not been validated"):  # a subclass's own math: not the validated kernel
        assert not kernels.select("auto", FlippedSHC(4, C).kernel_spec(), x)
    assert not kernels.select("torch", spec, x)


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="do not match"):
        kernels.depth(torch.zeros(4, 3, C), torch.zeros(4, 3), torch.zeros(4, C + 1))
    with pytest.raises(ValueError, match="backend must be one of"):
        hyperconn.make_connection("shc", 4, C, backend="cuda")
