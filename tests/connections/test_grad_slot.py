"""The width step's shared gradient slot (``ops.StreamGradSlot``) and the in-place depth step.

With the slot, the mixing's backward hands its ``grad x`` to the projection's backward, which adds
its own terms in place; without it autograd sums the two. Both must give the same gradients (to
rounding) for every way autograd can be asked for them: the whole graph, the parameters alone,
the streams alone, streams that need no gradient, a retained graph run twice, recompute.
"""

import pytest
import torch
from tests.support import perturbed_connection

from hyperconn.connections import ops
from hyperconn.connections.reference import naive_forward
from hyperconn.connections.streams import compute_dtype

DIM = 8
KINDS = [("shc", 4), ("shc", 3), ("mhc", 4), ("mhc_lite", 3), ("kromhc", 4)]


def branch(u):
    return torch.tanh(u) * 1.5


def per_op(conn, x):
    """The width step without a slot: autograd sums the two ``grad x`` (the generic path)."""
    dt = compute_dtype(x)
    raw = ops.project_rms(x.reshape(*x.shape[:-2], -1), conn.folded_weight(dt), conn.eps)
    pre, res, post = conn.coefficient_math(raw * conn.gate_scale(dt) + conn.bias.to(dt))
    u, mixed = ops.width_mix(pre, res, x)
    return ops.depth_add(mixed, post, branch(u))


def streams(n, dtype=torch.float64, requires_grad=True, tokens=(2, 5)):
    x = torch.randn(*tokens, n, DIM, dtype=dtype, generator=torch.Generator().manual_seed(3))
    return x.requires_grad_(requires_grad)


@pytest.mark.parametrize("kind,n", KINDS)
def test_slot_path_is_taken_and_gradcheck_passes(kind, n):
    conn = perturbed_connection(kind, n, DIM, scale=0.3).double()
    slots = []
    original = ops.StreamGradSlot.take

    def spy(slot):
        grad = original(slot)
        slots.append(grad is not None)
        return grad

    x = streams(n, tokens=(1, 3))
    ops.StreamGradSlot.take = spy
    try:
        conn(x, branch).sum().backward()
    finally:
        ops.StreamGradSlot.take = original
    assert slots == [True]  # the projection's backward found the mixing's grad x
    names, params = zip(*conn.named_parameters(), strict=True)

    def f(x, *ps):
        with torch.nn.utils.stateless._reparametrize_module(conn, dict(zip(names, ps, strict=True))):
            return conn(x, branch)

    inputs = (x, *[p.detach().clone().requires_grad_() for p in params])
    assert torch.autograd.gradcheck(f, inputs, fast_mode=True)


@pytest.mark.parametrize("kind,n", KINDS)
def test_slot_gradients_equal_autograd_sum_and_naive(kind, n):
    conn = perturbed_connection(kind, n, DIM, scale=0.3).double()
    params = list(conn.parameters())
    weight = torch.randn(2, 5, n, DIM, dtype=torch.float64)
    results = []
    state = dict(conn.named_parameters())
    naive = lambda x: naive_forward(conn, x, branch, state)  # noqa: E731
    for forward in (lambda x: conn(x, branch), lambda x: per_op(conn, x), naive):
        x = streams(n)
        results.append(torch.autograd.grad((forward(x) * weight).sum(), [x, *params]))
    for slot, plain, naive in zip(*results, strict=True):
        torch.testing.assert_close(slot, plain, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(slot, naive, rtol=1e-10, atol=1e-10)


def test_partial_graphs_and_retained_graph():
    conn = perturbed_connection("shc", 4, DIM, scale=0.3).double()
    params = list(conn.parameters())
    x = streams(4)
    full = torch.autograd.grad(per_op(conn, x).square().sum(), [x, *params])
    # parameters alone (the streams need a gradient but none is asked for)
    only_params = torch.autograd.grad(conn(x, branch).square().sum(), params)
    for a, b in zip(only_params, full[1:], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    # the streams alone
    (only_x,) = torch.autograd.grad(conn(x, branch).square().sum(), [x])
    torch.testing.assert_close(only_x, full[0], rtol=1e-12, atol=1e-12)
    # a retained graph, backward twice: the slot is refilled by the second pass
    loss = conn(x, branch).square().sum()
    first = torch.autograd.grad(loss, [x], retain_graph=True)[0]
    second = torch.autograd.grad(loss, [x])[0]
    torch.testing.assert_close(first, full[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(second, full[0], rtol=1e-12, atol=1e-12)
    # streams that need no gradient: the parameters' gradients are unchanged
    fixed = x.detach()
    no_x = torch.autograd.grad(conn(fixed, branch).square().sum(), params)
    for a, b in zip(no_x, full[1:], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_recompute_with_slot_gives_identical_gradients(dtype):
    grads = []
    for recompute in (False, True):
        conn = perturbed_connection("shc", 4, DIM, scale=0.3, recompute=recompute)
        x = streams(4, dtype)
        conn(x, branch).float().square().sum().backward()
        grads.append([x.grad, *[p.grad for p in conn.parameters()]])
    for a, b in zip(*grads, strict=True):
        assert a.dtype == b.dtype
        assert torch.equal(a, b)


def test_bfloat16_streams_gradient_is_bfloat16_and_close_to_float32():
    conn = perturbed_connection("shc", 4, DIM, scale=0.3)
    x16 = streams(4, torch.bfloat16)
    conn(x16, branch).float().square().sum().backward()
    x32 = x16.detach().float().requires_grad_()
    per_op(conn, x32).square().sum().backward()
    assert x16.grad.dtype == torch.bfloat16
    rel = (x16.grad.float() - x32.grad).norm() / x32.grad.norm()
    assert rel < 0.03


def test_slot_take_empties_it():
    slot = ops.StreamGradSlot()
    assert not slot.armed and slot.take() is None
    slot.grad = torch.ones(2)
    assert torch.equal(slot.take(), torch.ones(2))
    assert slot.take() is None


def test_in_place_depth_equals_out_of_place_values_and_gradients():
    gen = torch.Generator().manual_seed(5)
    a = torch.randn(3, 4, DIM, dtype=torch.float64, generator=gen, requires_grad=True)
    post = torch.rand(3, 4, dtype=torch.float64, generator=gen, requires_grad=True)
    b = torch.randn(3, DIM, dtype=torch.float64, generator=gen, requires_grad=True)
    results = []
    for in_place in (False, True):
        mixed = a * 2.0  # a fresh tensor that nothing saved
        out = ops.depth_add(mixed, post, b, in_place=in_place)
        assert (out.data_ptr() == mixed.data_ptr()) == in_place
        results.append((out.detach(), *torch.autograd.grad(out.square().sum(), [a, post, b])))
    for x, y in zip(*results, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-14, atol=1e-14)


def test_in_place_depth_needs_matching_dtypes():
    mixed = torch.randn(3, 4, DIM).bfloat16()
    out = ops.depth_add(mixed, torch.rand(3, 4), torch.randn(3, DIM), in_place=True)
    assert out.dtype == torch.bfloat16 and out.data_ptr() != mixed.data_ptr()


def test_public_width_then_depth_leaves_mixed_alone():
    conn = perturbed_connection("shc", 4, DIM, scale=0.3)
    x = streams(4, torch.float32)
    u, mixed, post = conn.width(x)
    before = mixed.detach().clone()
    conn.depth(mixed, post, branch(u)).sum().backward()
    assert torch.equal(mixed.detach(), before)
