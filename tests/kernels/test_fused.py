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

import shc
from shc import kernels

C = 40  # not a multiple of the 32-wide feature blocks set in conftest
FP32_TOL = (2e-5, 5e-5)
BF16_FACTOR, BF16_FLOOR = 1.5, 1e-3


def perturbed(kind: str, n: int, seed: int = 0, **options):
    """A connection with every parameter moved off its init by N(0, 0.5^2) noise."""
    conn = shc.make_connection(kind, n, C, layer_index=1, **options)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in conn.parameters():
            p.add_(0.5 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return conn


def layer(width, depth, conn, streams, weight):
    """width -> a nonlinear branch -> depth."""
    u, mixed, h_post = width(conn, streams)
    out = depth(conn, mixed, h_post, torch.tanh(u) * weight)
    return u, mixed, h_post, out


def torch_width(conn, streams):
    return conn.width(streams)


def torch_depth(conn, mixed, h_post, branch_out):
    return conn.depth(mixed, h_post, branch_out)


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
    fused = run(kernels.width, fused_depth, conn, streams, weight, grad_out)
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
        ("shc", 2, (2, 7)),
        ("shc", 3, (19,)),
        ("shc", 4, (2, 7)),
        ("shc", 4, (19,)),
        ("shc", 5, (13,)),  # n > 4: projection kernel + PyTorch coefficients + mixing kernel
        ("mhc", 4, (13,)),
        ("mhc_lite", 3, (13,)),
        ("kromhc", 4, (13,)),
        ("hc", 3, (13,)),
    ],
)
def test_fused_matches_pytorch_float32(kind, n, lead):
    check_against_pytorch(perturbed(kind, n), lead, torch.float32)


def test_fused_shc_triton_coefficient_backward_matches_pytorch_in_interpreter(monkeypatch):
    """The opt-in Triton coefficient backward agrees under the interpreter (it did NOT on an H200:
    see fused_width.FUSED_COEFFICIENT_BACKWARD; the default, autograd, is what the other tests use)."""
    from shc.kernels import fused_width

    monkeypatch.setattr(fused_width, "FUSED_COEFFICIENT_BACKWARD", True)
    check_against_pytorch(perturbed("shc", 4), (19,), torch.float32)


def test_fused_shc_split_mix_matches_pytorch(monkeypatch):
    """The two-kernel variant (coefficients written, then mixed) gives the same results."""
    from shc.kernels import fused_width

    monkeypatch.setattr(fused_width, "SPLIT_MIX", True)
    check_against_pytorch(perturbed("shc", 4), (19,), torch.float32)


@pytest.mark.parametrize("n", [2, 3, 4])
def test_fused_shc_matches_pytorch_bfloat16(n):
    check_against_pytorch(perturbed("shc", n, seed=n), (19,), torch.bfloat16)


def test_fused_shc_at_init_is_the_closed_form():
    """At init H_res = J + tanh(4)(I - J), H_pre/H_post the ±1-bias sigmoids, whatever the input."""
    n = 4
    conn = shc.make_connection("shc", n, C, layer_index=2)
    streams = torch.randn(5, n, C)
    u, mixed, h_post = kernels.width(conn, streams)
    eye, centre = torch.eye(n), torch.full((n, n), 1.0 / n)
    res = centre + torch.tanh(torch.tensor(4.0)) * (eye - centre)
    bias = -torch.ones(n)
    bias[2] = 1.0
    torch.testing.assert_close(mixed, torch.einsum("st,bsd->btd", res, streams), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(u, torch.einsum("s,bsd->bd", torch.sigmoid(bias), streams), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(h_post, (2 * torch.sigmoid(bias)).expand(5, n))


def test_switches_force_pytorch(monkeypatch):
    x = torch.zeros(3, 2, C)
    assert kernels.available(x)  # interpreter forced by the fixture
    monkeypatch.setenv("SHC_DISABLE_TRITON", "1")
    assert not kernels.available(x)
    assert kernels.maybe_width(perturbed("shc", 2), x) is None
    monkeypatch.delenv("SHC_DISABLE_TRITON")
    monkeypatch.setattr(kernels, "use_triton", False)
    assert not kernels.available(x)
    monkeypatch.setattr(kernels, "use_triton", True)
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert not kernels.available(x)  # CPU without the interpreter: always PyTorch


def test_maybe_width_skips_unsupported():
    x = torch.zeros(3, 2, C)
    assert kernels.maybe_width(shc.make_connection("residual", 1, C), x[:, :1]) is None
    assert kernels.maybe_width(perturbed("shc", 2), x.double()) is None
    assert kernels.maybe_width(perturbed("shc", 2), x) is not None


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="unsupported"):
        kernels.width(perturbed("shc", 3), torch.zeros(4, 2, C))
    with pytest.raises(ValueError, match="do not match"):
        kernels.depth(torch.zeros(4, 3, C), torch.zeros(4, 3), torch.zeros(4, C + 1))


def test_connections_take_pytorch_path_on_cpu(monkeypatch):
    """The hook in HyperConnection.width/depth is a device-type branch: CPU never reaches the
    kernels, even with the interpreter forced (and torch.compile on CPU never sees them)."""

    def refuse(*args, **kwargs):
        raise AssertionError("shc.kernels called for a CPU tensor")

    monkeypatch.setattr(kernels, "maybe_width", refuse)
    monkeypatch.setattr(kernels, "maybe_depth", refuse)
    conn = perturbed("shc", 3)
    x = torch.randn(2, 5, 3, C)
    out = conn(x, torch.tanh)  # PyTorch path
    u, mixed, h_post = kernels.width(conn, x)
    torch.testing.assert_close(out, kernels.depth(mixed, h_post, torch.tanh(u)), atol=1e-5, rtol=1e-5)
