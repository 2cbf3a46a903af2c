"""HyperDecoderLayer inside HF's model code: the KV cache and generate."""

from __future__ import annotations

import inspect

import pytest
import torch

import hyperconn.hf

from .helpers import FAMILIES, perturb_connections, tiny_model, token_batch


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize(("kind", "streams"), [("shc", 4), ("hc", 2)])
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
