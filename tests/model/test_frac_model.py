"""The language model with frac-connections (model.connection.num_fracs): the stream between
sublayers is the residual model's size, the ends are views, it trains, bad configs are refused."""

import pytest
import torch

from hyperconn.connections import FracConnection
from hyperconn.model import ConnectionConfig, LanguageModel, ModelConfig


def _cfg(kind: str = "shc", dim: int = 32, **conn) -> ModelConfig:
    return ModelConfig(
        vocab_size=64, dim=dim, n_layers=2, n_heads=2, n_kv_heads=1, head_dim=16, mlp_dim=64, max_seq_len=32,
        connection=ConnectionConfig(kind=kind, **conn),
    )


def _streams_between_sublayers(model: LanguageModel, idx: torch.Tensor) -> list[torch.Size]:
    shapes = []
    hooks = [c.register_forward_pre_hook(lambda _m, args: shapes.append(args[0].shape)) for c in model.connections()]
    model(idx)
    for h in hooks:
        h.remove()
    return shapes


@pytest.mark.parametrize("kind", ["hc", "mhc", "shc"])
def test_the_stream_between_sublayers_is_the_residual_models(kind):
    idx = torch.randint(64, (2, 8))
    frac = LanguageModel(_cfg(kind, num_fracs=4))
    residual = LanguageModel(_cfg("residual"))
    wide = LanguageModel(_cfg(kind, num_streams=4))
    assert all(isinstance(c, FracConnection) for c in frac.connections())
    frac_shapes = _streams_between_sublayers(frac, idx)
    assert frac_shapes == [torch.Size([2, 8, 4, 8])] * 4
    residual_numel = _streams_between_sublayers(residual, idx)[0].numel()
    assert {s.numel() for s in frac_shapes} == {residual_numel}  # (B, T, C): no widening
    assert _streams_between_sublayers(wide, idx)[0].numel() == 4 * residual_numel


def test_ends_are_views_of_the_hidden_state():
    model = LanguageModel(_cfg("shc", num_fracs=4))
    h = torch.randn(2, 3, 32)
    x = model.expand(h)
    assert x.shape == (2, 3, 4, 8) and x.data_ptr() == h.data_ptr()
    y = model.readout(x)
    assert y.data_ptr() == h.data_ptr() and torch.equal(y, h)
    assert not list(model.expand.parameters()) and not list(model.readout.parameters())


def test_hc_frac_model_starts_as_the_residual_model():
    """hc's H_res = I at init and every fraction has weight 1: the same logits as residual."""
    torch.manual_seed(0)
    frac = LanguageModel(_cfg("hc", num_fracs=4))
    residual = LanguageModel(_cfg("residual"))
    shared = {k: v for k, v in frac.state_dict().items() if "conn" not in k}
    missing = residual.load_state_dict(shared, strict=False)
    assert not missing.unexpected_keys
    idx = torch.randint(64, (2, 8))
    torch.testing.assert_close(frac(idx), residual(idx), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["hc", "mhc", "shc"])
def test_a_frac_model_trains(kind):
    torch.manual_seed(0)
    model = LanguageModel(_cfg(kind, num_fracs=4))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    idx = torch.randint(64, (4, 17))
    losses = []
    for _ in range(12):
        logits = model(idx[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 64), idx[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0] - 0.5, losses


def test_meta_build_then_reset_equals_a_plain_build():
    torch.manual_seed(0)
    plain = LanguageModel(_cfg("mhc", num_fracs=4))
    with torch.device("meta"):
        meta = LanguageModel(_cfg("mhc", num_fracs=4))
    meta.to_empty(device="cpu")
    meta.reset_parameters()
    for a, b in zip(plain.connections(), meta.connections(), strict=True):
        torch.testing.assert_close(a.pre_shift, b.pre_shift)
        torch.testing.assert_close(a.post_shift, b.post_shift)


def test_config_defaults_and_round_trip():
    conn = ConnectionConfig(kind="shc", num_fracs=4)
    assert conn.num_streams == 1  # no widening: the default with fractions
    assert ConnectionConfig(kind="shc").num_fracs == 1 and ConnectionConfig(kind="shc").num_streams == 4
    cfg = _cfg("shc", num_fracs=4)
    again = ModelConfig.from_dict(cfg.to_dict())
    assert again.connection.num_fracs == 4 and again.connection.num_streams == 1


def test_bad_configs_are_one_clear_error():
    with pytest.raises(ValueError, match=r"model.dim=30 is not divisible by model.connection.num_fracs=4"):
        ModelConfig(vocab_size=64, dim=30, n_heads=2, n_kv_heads=1, head_dim=16,
                    connection=ConnectionConfig(kind="shc", num_fracs=4)).validate()
    with pytest.raises(ValueError, match=r"num_fracs=4 .*num_streams must be 1, got 4"):
        _cfg("shc", num_fracs=4, num_streams=4).validate()
    with pytest.raises(ValueError, match=r"residual has nothing to mix"):
        _cfg("residual", num_fracs=4).validate()
    with pytest.raises(ValueError, match=r"num_fracs must be an integer >= 1, got 0"):
        _cfg("shc", num_fracs=0).validate()
