"""hyperconn.hf.convert(..., stream_dtype=...): the streams in bf16 between sublayers, the coefficients
in float32, the logits in the model's dtype; the default leaves everything as it was."""

from __future__ import annotations

import json

import pytest
import torch

import hyperconn.hf
from hyperconn.model import ConnectionConfig
from hyperconn.model.config import STREAM_DTYPES

from .helpers import FAMILIES, FAST_FAMILIES, KIND_STREAMS, perturb_connections, slow_unless, tiny_model, token_batch
from .test_training import enable_checkpointing

# max |logits(bf16 streams) - logits(float32)| / max |logits(float32)| stays below this. bf16 keeps
# 8 mantissa bits (unit roundoff 2^-9 ~ 0.002); the streams are rounded once after the expand and
# after each of the 2 L = 6 depth adds, and the tiny models' large weights (initializer_range=0.2)
# amplify each rounding on the way to the logits. Measured on every family x kind below (perturbed
# connections): 0.006 to 0.037 of the logits' scale, the largest for hc with 4 streams.
RELATIVE_TOLERANCE = 0.05


def converted(family="llama", kind="shc", streams=4, stream_dtype="float32", perturbed=True, **config):
    model = hyperconn.hf.convert(tiny_model(family, **config), kind, streams, stream_dtype=stream_dtype)
    if perturbed:
        perturb_connections(model)
    return model


def logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


def relative_error(actual, expected):
    return ((actual.float() - expected.float()).abs().max() / expected.float().abs().max()).item()


@pytest.mark.parametrize("family", ["llama", pytest.param("qwen3", marks=pytest.mark.slow)])
def test_the_default_is_float32_and_leaves_the_model_as_it_was(family):
    ids = token_batch()
    original = tiny_model(family)
    default = converted(family, perturbed=False)
    explicit = converted(family, stream_dtype="float32", perturbed=False)
    assert hyperconn.hf.conversion_of(default).stream_dtype == "float32"
    assert "stream_dtype" not in default.config.hyperconn  # the layout earlier releases wrote
    assert default.config.hyperconn == explicit.config.hyperconn
    assert all(layer.stream_dtype is None for layer in explicit.model.layers)
    torch.testing.assert_close(logits(explicit, ids), logits(default, ids), atol=0, rtol=0)
    torch.testing.assert_close(logits(explicit, ids), logits(original, ids), atol=1e-4, rtol=0)


def test_the_streams_between_sublayers_are_bf16_and_the_sublayers_see_float32():
    model = converted("llama", stream_dtype="bfloat16")
    ids = token_batch()
    seen: dict[str, list[torch.dtype]] = {"conn": [], "layer_out": [], "norm_in": [], "sublayer_in": []}
    first_streams = []

    def on_conn(module, args):
        seen["conn"].append(args[0].dtype)
        if not first_streams:
            first_streams.append(args[0])

    hooks = [c.register_forward_pre_hook(on_conn) for c in hyperconn.hf.hyper_connections(model)]
    for layer in model.model.layers:
        hooks.append(layer.register_forward_hook(lambda m, a, out: seen["layer_out"].append(out.dtype)))
        for norm in (layer.input_layernorm, layer.post_attention_layernorm):
            hooks.append(norm.register_forward_pre_hook(lambda m, a: seen["norm_in"].append(a[0].dtype)))
        hooks.append(layer.mlp.register_forward_pre_hook(lambda m, a: seen["sublayer_in"].append(a[0].dtype)))
    out = logits(model, ids)
    for hook in hooks:
        hook.remove()
    layers = model.config.num_hidden_layers
    assert seen["conn"] == [torch.bfloat16] * 2 * layers
    # between layers the flattened streams stay bf16; the last layer hands the model its own dtype
    assert seen["layer_out"] == [torch.bfloat16] * (layers - 1) + [torch.float32]
    assert seen["norm_in"] == seen["sublayer_in"] * 2 == [torch.float32] * 2 * layers
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    # cast once after the expand: the first connection sees n copies of the rounded embedding
    embedded = model.model.embed_tokens(ids).to(torch.bfloat16)
    assert torch.equal(first_streams[0], embedded.unsqueeze(-2).expand(*embedded.shape[:-1], 4, 32))


@pytest.mark.parametrize("grad", [True, False])
def test_the_coefficients_are_float32(grad):
    """The training path (``coefficients``, which ``mixing`` and the fast width step both call)
    and the no-grad path (``inference_mixing``) compute the coefficients from the bf16 streams in
    float32."""
    model = converted("qwen3", "mhc", 4, stream_dtype="bfloat16")
    records = []
    for conn in hyperconn.hf.hyper_connections(model):
        name = "coefficients" if grad else "inference_mixing"
        real = getattr(conn, name)

        def recorded(streams, *args, real=real):
            result = real(streams, *args)
            tensors = [result] if isinstance(result, torch.Tensor) else result
            records.append((streams.dtype, [t.dtype for t in tensors if isinstance(t, torch.Tensor)]))
            return result

        setattr(conn, name, recorded)
    with torch.set_grad_enabled(grad):
        model(token_batch())
    assert len(records) == 2 * model.config.num_hidden_layers
    for streams_dtype, coefficient_dtypes in records:
        assert streams_dtype == torch.bfloat16
        assert coefficient_dtypes and set(coefficient_dtypes) == {torch.float32}


@pytest.mark.parametrize(
    ("family", "kind", "streams"),
    [slow_unless(family in FAST_FAMILIES, family, "shc", 4) for family in FAMILIES]
    + [slow_unless(kind == "mhc", "llama", kind, n) for kind, n in KIND_STREAMS],  # llama-shc-4: above
)
def test_logits_are_close_to_the_float32_model(family, kind, streams):
    ids = token_batch()
    reference = logits(converted(family, kind, streams), ids)
    bf16 = logits(converted(family, kind, streams, stream_dtype="bfloat16"), ids)
    assert bf16.dtype == torch.float32 and torch.isfinite(bf16).all()
    error = relative_error(bf16, reference)
    assert 0 < error < RELATIVE_TOLERANCE  # > 0: the streams really were rounded


def test_at_init_the_bf16_conversion_stays_close_to_the_original_model():
    ids = token_batch()
    expected = logits(tiny_model("qwen2"), ids)
    actual = logits(converted("qwen2", stream_dtype="bfloat16", perturbed=False), ids)
    assert relative_error(actual, expected) < RELATIVE_TOLERANCE


def test_on_a_bf16_model_the_option_changes_nothing():
    """Every stream is bf16 already: the casts are no-ops, the logits bitwise those of the default."""
    ids = token_batch()
    models = [hyperconn.hf.convert(tiny_model("llama").to(torch.bfloat16), "shc", 4, stream_dtype=d)
              for d in STREAM_DTYPES]  # fmt: skip
    for model in models:
        perturb_connections(model)
    default, bf16 = (logits(model, ids) for model in models)
    assert bf16.dtype == torch.bfloat16
    torch.testing.assert_close(bf16, default, atol=0, rtol=0)


@pytest.mark.parametrize("checkpointing", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_gradients_reach_every_connection_parameter(checkpointing):
    """Every connection parameter gets a finite, non-zero float32 gradient, pointing the way the
    float32 model's does (cosine similarity over all connection parameters)."""
    ids = token_batch()
    grads = {}
    for stream_dtype in STREAM_DTYPES:
        model = converted("llama", "shc", 4, stream_dtype=stream_dtype).train()
        if checkpointing:
            enable_checkpointing(model)
        model(input_ids=ids, labels=ids).loss.backward()
        params = [p for conn in hyperconn.hf.hyper_connections(model) for p in conn.parameters()]
        for p in params:
            assert p.dtype == torch.float32 and p.grad is not None and p.grad.dtype == torch.float32
            assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
        grads[stream_dtype] = torch.cat([p.grad.flatten() for p in params])
    cosine = torch.nn.functional.cosine_similarity(grads["float32"], grads["bfloat16"], dim=0)
    assert cosine > 0.99


def test_autocast_keeps_the_streams_bf16():
    model = converted("qwen3", stream_dtype="bfloat16")
    dtypes = []
    hooks = [c.register_forward_pre_hook(lambda m, a: dtypes.append(a[0].dtype))
             for c in hyperconn.hf.hyper_connections(model)]  # fmt: skip
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = logits(model, token_batch())
    for hook in hooks:
        hook.remove()
    assert set(dtypes) == {torch.bfloat16} and torch.isfinite(out.float()).all()


def test_save_pretrained_then_load_keeps_stream_dtype(tmp_path):
    model = converted("mistral", "mhc", 4, stream_dtype="bfloat16")
    model.save_pretrained(tmp_path)
    entry = json.loads((tmp_path / "config.json").read_text())["hyperconn"]
    assert entry == {"kind": "mhc", "num_streams": 4, "init": "preserve", "options": {}, "version": 1,
                     "stream_dtype": "bfloat16"}  # fmt: skip
    reloaded = hyperconn.hf.load(tmp_path)
    assert hyperconn.hf.conversion_of(reloaded) == hyperconn.hf.conversion_of(model)
    assert all(layer.stream_dtype == torch.bfloat16 for layer in reloaded.model.layers)
    ids = token_batch()
    torch.testing.assert_close(logits(reloaded, ids), logits(model, ids), atol=0, rtol=0)


ALLOWED = ", ".join(STREAM_DTYPES)


@pytest.mark.parametrize("value", ["float16", "bf16", "BFloat16", None, torch.bfloat16])
def test_a_bad_value_is_refused_by_name_before_the_model_changes(value):
    model = tiny_model("llama")
    with pytest.raises(ValueError, match=f"stream_dtype must be one of {ALLOWED}, got {value!r}"):
        hyperconn.hf.convert(model, "shc", 4, stream_dtype=value)
    assert not any(isinstance(layer, hyperconn.hf.HyperDecoderLayer) for layer in model.model.layers)
    assert getattr(model.config, "hyperconn", None) is None


def test_a_bad_value_in_a_saved_config_is_refused(tmp_path):
    converted("llama", stream_dtype="bfloat16").save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["hyperconn"]["stream_dtype"] = "float16"
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=f"stream_dtype must be one of {ALLOWED}, got 'float16'"):
        hyperconn.hf.load(tmp_path)


def test_of_carries_the_model_config_word():
    connection = ConnectionConfig("shc", 2).validate()
    spec = hyperconn.hf.ConversionConfig.of(connection, stream_dtype="bfloat16")
    assert spec.stream_dtype == "bfloat16" and spec.to_dict()["stream_dtype"] == "bfloat16"
    assert hyperconn.hf.ConversionConfig.from_dict(spec.to_dict()) == spec
    with pytest.raises(ValueError, match="got 'half'"):
        hyperconn.hf.ConversionConfig.of(connection, stream_dtype="half")


def test_greedy_generate_with_and_without_cache_agree():
    model = converted("qwen3", "shc", 4, stream_dtype="bfloat16")
    ids = token_batch(batch=2, length=5)
    kwargs = dict(attention_mask=torch.ones_like(ids), max_new_tokens=10, do_sample=False, pad_token_id=0)
    cached = model.generate(ids, use_cache=True, **kwargs)
    uncached = model.generate(ids, use_cache=False, **kwargs)
    assert cached.shape == (2, 5 + 10) and torch.equal(cached[:, :5], ids)
    assert torch.equal(cached, uncached)


def test_output_hidden_states_are_in_the_model_dtype():
    """Each recorded state is a layer's bf16 streams, cast to float32 and then averaged."""
    model = converted("qwen3", stream_dtype="bfloat16")
    outputs = []
    hooks = [layer.register_forward_hook(lambda m, a, out: outputs.append(out)) for layer in model.model.layers]
    ids = token_batch(batch=2, length=5)
    with torch.no_grad():
        states = model(ids, output_hidden_states=True).hidden_states
    for hook in hooks:
        hook.remove()
    if states is None:
        pytest.skip("this transformers release collects hidden states in its own loop")
    assert len(states) == model.config.num_hidden_layers + 1
    assert all(s.dtype == torch.float32 and s.shape == (2, 5, 32) for s in states)
    for state, raw in zip(states[1:-1], outputs[:-1], strict=True):
        assert raw.dtype == torch.bfloat16
        torch.testing.assert_close(state, raw.unflatten(-1, (4, 32)).float().mean(dim=-2), atol=0, rtol=0)
