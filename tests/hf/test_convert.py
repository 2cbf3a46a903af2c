"""hyperconn.hf.convert on tiny Llama / Mistral / Qwen2 / Qwen3 models: structure, function
preservation at init, refusals."""

from __future__ import annotations

import pytest
import torch

import hyperconn.hf
from hyperconn.connections import HyperConnection

from .helpers import FAMILY_PARAMS, KIND_STREAMS, VOCAB, perturb_connections, tiny_model, token_batch, transformers


@pytest.mark.parametrize("family", FAMILY_PARAMS)
@pytest.mark.parametrize(("kind", "streams"), KIND_STREAMS)
def test_logits_equal_at_init(family, kind, streams):
    model = tiny_model(family)
    ids = token_batch()
    with torch.no_grad():
        before = model(ids).logits
        hyperconn.hf.convert(model, kind, streams)
        after = model(ids).logits
    assert before.abs().max() > 0.5  # logits well above rounding: a broken init would show
    torch.testing.assert_close(after, before, atol=1e-4, rtol=0)


@pytest.mark.parametrize(("kind", "streams"), [("mhc", 4), ("mhc_lite", 3), ("kromhc", 4), ("shc", 4)])
def test_paper_init_is_not_function_preserving(kind, streams):
    """The paper's from-scratch init changes the function: the preserving test above can fail.
    (HC's own init, H_pre = e_l, H_res = I, H_post = 1, keeps the streams equal, and the sum
    over n equal streams only scales the final RMSNorm's input: it preserves up to that eps.)"""
    model = tiny_model("llama")
    ids = token_batch()
    with torch.no_grad():
        before = model(ids).logits
        after = hyperconn.hf.convert(model, kind, streams, init="paper")(ids).logits
    assert (after - before).abs().max() > 1e-2
    assert hyperconn.hf.conversion_of(model).stream_reduction == "sum"


def test_perturbed_connections_change_the_function():
    model = tiny_model("qwen3")
    ids = token_batch()
    with torch.no_grad():
        before = model(ids).logits
        hyperconn.hf.convert(model, "shc", 4)
        perturb_connections(model)
        after = model(ids).logits
    assert (after - before).abs().max() > 1e-2


@pytest.mark.parametrize("family", FAMILY_PARAMS)
def test_two_connections_per_layer_with_the_layer_index(family):
    model = hyperconn.hf.convert(tiny_model(family, layers=4), "mhc", 4, sinkhorn_iters=7)
    connections = hyperconn.hf.hyper_connections(model)
    assert len(connections) == 2 * 4
    for i, layer in enumerate(model.model.layers):
        assert isinstance(layer, hyperconn.hf.HyperDecoderLayer)
        assert (layer.expand_input, layer.reduce_output) == (i == 0, i == 3)
        for conn in (layer.attn_conn, layer.mlp_conn):
            assert (conn.kind, conn.num_streams, conn.dim, conn.layer_index) == ("mhc", 4, 32, i)
            assert conn.sinkhorn_iters == 7
    assert model.config.hyperconn == {
        "kind": "mhc",
        "num_streams": 4,
        "init": "preserve",
        "options": {"sinkhorn_iters": 7},
        "version": 1,
    }


def test_original_weights_keep_their_names():
    """A plain checkpoint's keys are a subset of the converted model's: from_pretrained of the
    base model and then convert, or loading a base state dict into a converted copy, works."""
    base = tiny_model("llama")
    base_keys = set(base.state_dict())
    converted = hyperconn.hf.convert(tiny_model("llama"), "shc", 4)
    keys = set(converted.state_dict())
    assert base_keys <= keys
    extra = keys - base_keys
    assert extra and all(".attn_conn." in key or ".mlp_conn." in key for key in extra)
    assert sorted(extra) == sorted(hyperconn.hf.connection_state_keys(converted))


def test_connection_parameters_are_float32_on_a_bf16_model():
    model = tiny_model("llama").to(torch.bfloat16)
    hyperconn.hf.convert(model, "shc", 4)
    for conn in hyperconn.hf.hyper_connections(model):
        assert all(p.dtype == torch.float32 for p in conn.parameters())
    logits = model(token_batch()).logits
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits).all()


def test_eval_and_train_mode_follow_the_model():
    model = tiny_model("llama")  # eval
    hyperconn.hf.convert(model, "shc", 4)
    assert not any(m.training for m in model.modules())
    model.train()
    assert all(m.training for m in model.modules())


def test_unsupported_architecture_is_refused_by_name():
    config = transformers.GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=32)
    model = transformers.AutoModelForCausalLM.from_config(config)
    with pytest.raises(ValueError, match="GPT2LMHeadModel") as err:
        hyperconn.hf.convert(model, "shc", 4)
    for name in hyperconn.hf.SUPPORTED_ARCHITECTURES:
        assert name in str(err.value)
    assert "LlamaForCausalLM" in hyperconn.hf.SUPPORTED_ARCHITECTURES
    assert not any(isinstance(m, HyperConnection) for m in model.modules())


def test_a_subclass_of_a_supported_class_is_refused():
    """Only the exact tested classes: a subclass may have changed the layer's arithmetic."""

    class MyLlama(transformers.LlamaForCausalLM):
        pass

    model = MyLlama(tiny_model("llama").config)
    with pytest.raises(ValueError, match="MyLlama"):
        hyperconn.hf.convert(model)


@pytest.mark.parametrize(
    ("args", "options", "match"),
    [
        (("nope", 4), {}, "unknown connection kind 'nope'"),
        (("shc", 0), {}, "shc: num_streams must be an integer >= 2, got 0"),
        (("shc", 1), {}, "shc: num_streams must be an integer >= 2, got 1"),
        (("hc", 1), {}, "hc: num_streams must be an integer >= 2, got 1"),
        (("shc", 4), {"sigma_bias": "x"}, "shc: sigma_bias must be a finite number, got 'x'"),
        (("kromhc", 3), {}, "power of two"),
        (("residual", 4), {}, "residual: num_streams must be 1, got 4"),
        (("shc", 4), {"sinkhorn_iters": 3}, "unknown option"),
        (("mhc", 4), {"sinkhorn_iters": 0}, "sinkhorn_iters .*got 0"),
        (("shc", 4), {"init": "zeros"}, "init must be one of preserve, paper, got 'zeros'"),
        (("shc", 4), {"sigma_bias": torch.tensor(1.0)}, "JSON"),
    ],
)
def test_bad_arguments_are_refused_before_the_model_changes(args, options, match):
    model = tiny_model("qwen2")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=match):
        hyperconn.hf.convert(model, *args, **options)
    assert not any(isinstance(layer, hyperconn.hf.HyperDecoderLayer) for layer in model.model.layers)
    assert getattr(model.config, "shc", None) is None
    after = model.state_dict()
    assert state.keys() == after.keys() and all(torch.equal(state[k], after[k]) for k in state)


def test_converting_twice_is_refused():
    model = hyperconn.hf.convert(tiny_model("llama"), "shc", 4)
    with pytest.raises(ValueError, match="already converted"):
        hyperconn.hf.convert(model, "mhc", 4)
    assert {c.kind for c in hyperconn.hf.hyper_connections(model)} == {"shc"}


def test_a_layer_without_the_expected_parts_is_refused():
    model = tiny_model("llama")
    del model.model.layers[1].post_attention_layernorm
    with pytest.raises(ValueError, match="decoder layer 1 .* has no post_attention_layernorm"):
        hyperconn.hf.convert(model, "shc", 4)
    assert not any(isinstance(layer, hyperconn.hf.HyperDecoderLayer) for layer in model.model.layers)


def test_wrong_hidden_width_between_layers_is_an_error():
    model = hyperconn.hf.convert(tiny_model("llama"), "shc", 4)
    with pytest.raises(ValueError, match=r"n\*C = 4\*32 = 128"):
        model.model.layers[1](torch.zeros(1, 3, 32))


def test_the_conversion_is_checked_once_with_the_model_config_check(monkeypatch):
    """``ConversionConfig`` checks its (kind, num_streams, options) with ``ConnectionConfig``'s own
    function, once per conversion; one made from a validated ``ConnectionConfig`` is not checked again."""
    import importlib

    from hyperconn.model import ConnectionConfig

    convert_module = importlib.import_module("hyperconn.hf.convert")  # the package's ``convert`` is the function

    calls = []
    real = convert_module.check_connection
    monkeypatch.setattr(convert_module, "check_connection", lambda *a: calls.append(a) or real(*a))
    hyperconn.hf.convert(tiny_model("llama"), "mhc", 2, sinkhorn_iters=5)
    assert calls == [("mhc", 2, {"sinkhorn_iters": 5})]
    spec = hyperconn.hf.ConversionConfig.of(ConnectionConfig("shc", 2, {"sigma_bias": 2.0}).validate())
    assert spec.to_dict() == {"kind": "shc", "num_streams": 2, "init": "preserve", "options": {"sigma_bias": 2.0},
                              "version": 1}  # fmt: skip
    hyperconn.hf.apply_conversion(tiny_model("llama"), spec)
    assert len(calls) == 1 and spec.connection == ConnectionConfig("shc", 2, {"sigma_bias": 2.0})
    with pytest.raises(ValueError, match="shc: num_streams must be an integer >= 2, got 1"):
        hyperconn.hf.ConversionConfig("shc", 1).validate()
