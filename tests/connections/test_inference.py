"""The gradient-free path (``width_inference``, cached parameter-derived tensors) equals the
autograd path, and its cache follows every parameter change."""

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


@pytest.mark.parametrize("kind", ["hc", "mhc", "mhc_lite", "kromhc", "shc"])
def test_cache_follows_every_kind_of_parameter_change(kind):
    conn = _perturbed(kind, 4)
    x = torch.randn(5, 4, 24)

    def check():
        with torch.enable_grad():
            expected = conn(x.clone().requires_grad_(True), _branch).detach()
        with torch.no_grad():
            torch.testing.assert_close(conn(x, _branch), expected, rtol=1e-4, atol=1e-4)

    check()  # builds the cache
    with torch.no_grad():  # an in-place write (what optimizers do)
        for p in conn.parameters():
            p.mul_(1.1).add_(0.05)
    check()
    conn.load_state_dict(_perturbed(kind, 4, seed=7).state_dict())  # copy_ into the same storage
    check()
    opt = torch.optim.SGD(conn.parameters(), lr=0.5)  # a real optimizer step on real gradients
    conn(x.clone().requires_grad_(True), _branch).square().sum().backward()
    opt.step()
    check()
    conn.reset_parameters()
    check()
    other = _perturbed(kind, 4, seed=9)  # a parameter replaced by another tensor
    for name, p in other.named_parameters():
        setattr(conn, name, p)
    check()
    clone = copy.deepcopy(conn)  # a deep copy must not serve the original's cache to new storage
    with torch.no_grad():
        for p in clone.parameters():
            p.zero_()
    check()


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
