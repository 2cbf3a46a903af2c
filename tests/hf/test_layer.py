"""HyperDecoderLayer inside HF's model code: the KV cache and generate."""

from __future__ import annotations

import inspect

import pytest
import torch

import hyperconn.hf

from .helpers import FAMILY_PARAMS, perturb_connections, tiny_model, token_batch


@pytest.mark.parametrize("family", FAMILY_PARAMS)
@pytest.mark.parametrize(("kind", "streams"), [("shc", 4), pytest.param("hc", 2, marks=pytest.mark.slow)])
def test_greedy_generate_with_and_without_cache_agree(family, kind, streams):
    model = hyperconn.hf.convert(tiny_model(family), kind, streams)
    perturb_connections(model)  # token-dependent coefficients: the cache must carry the right state
    ids = token_batch(batch=2, length=5)
    kwargs = dict(attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False, pad_token_id=0)
    cached = model.generate(ids, use_cache=True, **kwargs)
    uncached = model.generate(ids, use_cache=False, **kwargs)
    assert cached.shape == (2, 5 + 12)
    assert torch.equal(cached, uncached)


def test_incremental_logits_match_the_full_forward():
    """Feeding tokens one by one through the cache gives the full-sequence logits, position by position."""
    model = hyperconn.hf.convert(tiny_model("qwen3"), "shc", 4)
    perturb_connections(model)
    ids = token_batch(batch=1, length=7)
    # transformers 5.x renamed past_key_values to cache (the old name warns until 5.40)
    name = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    with torch.no_grad():
        full = model(ids).logits
        out = model(ids[:, :3], use_cache=True)
        steps = [out.logits]
        for t in range(3, 7):
            out = model(ids[:, t : t + 1], use_cache=True, **{name: getattr(out, name)})
            steps.append(out.logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)


def test_padded_batch_matches_unpadded_rows():
    """The attention mask reaches the attention through the wrapper: a left-padded row gives the
    same last-token logits as the row alone."""
    model = hyperconn.hf.convert(tiny_model("llama"), "mhc", 4)
    perturb_connections(model)
    short = token_batch(batch=1, length=4, seed=3)
    long = token_batch(batch=1, length=6, seed=4)
    batch = torch.cat([torch.cat([torch.zeros(1, 2, dtype=torch.long), short], 1), long])
    mask = torch.ones_like(batch)
    mask[0, :2] = 0
    with torch.no_grad():
        padded = model(batch, attention_mask=mask).logits[:, -1]
        alone = torch.cat([model(short).logits[:, -1], model(long).logits[:, -1]])
    torch.testing.assert_close(padded, alone, atol=1e-5, rtol=1e-5)


def test_single_layer_model_expands_and_reduces_in_one_layer():
    model = tiny_model("llama", layers=1)
    ids = token_batch()
    with torch.no_grad():
        before = model(ids).logits
        hyperconn.hf.convert(model, "shc", 4)
        after = model(ids).logits
    (layer,) = model.model.layers
    assert layer.expand_input and layer.reduce_output
    torch.testing.assert_close(after, before, atol=1e-5, rtol=0)


@pytest.mark.parametrize(("kind", "streams"), [("shc", 4), ("mhc", 2)])
def test_output_hidden_states_are_the_reduced_streams_of_every_layer(kind, streams):
    """``num_hidden_layers + 1`` states of shape (B, T, C): the embeddings, each layer's streams
    reduced as the readout reduces them (checked against hooks on the layers), the last one normed."""
    model = hyperconn.hf.convert(tiny_model("qwen3"), kind, streams)
    perturb_connections(model)
    layers = model.model.layers
    outputs = []
    handles = [layer.register_forward_hook(lambda m, a, out: outputs.append(out)) for layer in layers]
    ids = token_batch(batch=2, length=5)
    with torch.no_grad():
        out = model(ids, output_hidden_states=True)
    for h in handles:
        h.remove()
    states = out.hidden_states
    assert len(states) == len(layers) + 1
    assert all(s.shape == (2, 5, 32) for s in states)
    torch.testing.assert_close(states[0], model.get_input_embeddings()(ids))
    for state, raw in zip(states[1:-1], outputs[:-1], strict=True):
        torch.testing.assert_close(state, raw.unflatten(-1, (streams, 32)).mean(dim=-2))
    torch.testing.assert_close(states[-1], model.model.norm(outputs[-1]))
    torch.testing.assert_close(states[-1], out.hidden_states[-1])
    with torch.no_grad():
        assert model(ids).hidden_states is None  # nothing collected unless asked


def test_output_hidden_states_at_init_match_the_unconverted_model():
    original = tiny_model("llama")
    with torch.no_grad():
        expected = original(token_batch(batch=1, length=6), output_hidden_states=True).hidden_states
        model = hyperconn.hf.convert(original, "shc", 4)
        got = model(token_batch(batch=1, length=6), output_hidden_states=True).hidden_states
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, atol=1e-5, rtol=1e-5)
