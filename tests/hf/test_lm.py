"""HFLanguageModel: the trainer's view of a converted HF model."""

from __future__ import annotations

import pytest
import torch

import hyperconn.hf
from hyperconn.hf.convert import ConversionConfig
from hyperconn.hf.lm import HFLanguageModel, parse_init_from

from .helpers import VOCAB, perturb_connections, tiny_model, token_batch


def wrapped(family="llama", **config):
    model = hyperconn.hf.convert(tiny_model(family, **config), "shc", 4)
    perturb_connections(model)
    return HFLanguageModel(model).eval()


def test_forward_is_the_hf_logits():
    lm = wrapped()
    ids = token_batch()
    with torch.no_grad():
        torch.testing.assert_close(lm(ids), lm.hf(ids).logits, atol=0, rtol=0)
    assert lm.max_seq_len == 64 and lm.vocab_size == VOCAB


def test_greedy_generate_matches_hf_generate():
    lm = wrapped("qwen3")
    ids = token_batch(batch=2, length=5)
    ours = lm.generate(ids, 10, temperature=0)
    mask = torch.ones_like(ids)  # explicit: HF would mask prompt tokens equal to pad_token_id
    theirs = lm.hf.generate(ids, attention_mask=mask, max_new_tokens=10, do_sample=False, pad_token_id=0)
    assert torch.equal(ours, theirs)


@pytest.mark.slow
def test_generate_past_the_position_limit_rebuilds_the_cache():
    lm = wrapped(max_position_embeddings=16)
    ids = token_batch(batch=1, length=6)
    out = lm.generate(ids, 30, temperature=0)
    assert out.shape == (1, 36)
    # up to the limit the cached decode equals recomputing the whole prefix each step
    naive = ids
    with torch.no_grad():
        for _ in range(16 - 6):
            naive = torch.cat([naive, lm(naive)[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(out[:, :16], naive)


@pytest.mark.slow
def test_sampling_is_reproducible_with_a_generator_and_respects_top_k():
    lm = wrapped()
    ids = token_batch(batch=1, length=4)
    first = lm.generate(ids, 8, temperature=1.0, top_k=1, generator=torch.Generator().manual_seed(3))
    assert torch.equal(first, lm.generate(ids, 8, temperature=0))  # top_k=1 is greedy
    a = lm.generate(ids, 8, temperature=1.5, top_k=20, generator=torch.Generator().manual_seed(3))
    b = lm.generate(ids, 8, temperature=1.5, top_k=20, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


@pytest.mark.parametrize(("kwargs", "match"), [({"temperature": -1}, "temperature"), ({"top_k": 0}, "top_k")])
def test_bad_sampling_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        wrapped().generate(token_batch(), 2, **kwargs)


def test_too_long_input_is_refused():
    with pytest.raises(ValueError, match="max_position_embeddings=64"):
        wrapped()(torch.zeros(1, 65, dtype=torch.long))


def test_an_unconverted_model_is_refused():
    with pytest.raises(ValueError, match="convert"):
        HFLanguageModel(tiny_model("llama"))


def test_connections_and_parameter_counts():
    lm = wrapped("qwen3", tied=True)
    assert len(lm.connections()) == 6
    embedding = lm.hf.get_input_embeddings().weight.numel()
    assert lm.non_embedding_parameters() == sum(p.numel() for p in lm.parameters()) - embedding


def test_from_directory_preserves_and_rebuilds(tmp_path):
    base = tiny_model("mistral")
    base.save_pretrained(tmp_path)
    spec = ConversionConfig("mhc", 4, "preserve", {"sinkhorn_iters": 6})
    lm = HFLanguageModel.from_directory(tmp_path, spec)
    assert lm.training
    ids = token_batch()
    with torch.no_grad():
        torch.testing.assert_close(lm.eval()(ids), base(ids).logits, atol=1e-5, rtol=0)
    skeleton = HFLanguageModel.from_directory(tmp_path, spec, pretrained=False)
    assert skeleton.state_dict().keys() == lm.state_dict().keys()
    skeleton.load_state_dict(lm.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(skeleton.eval()(ids), lm(ids), atol=0, rtol=0)


@pytest.mark.parametrize("value", ["llama", "hf:", "/tmp/x", "hf:/nonexistent/dir"])
def test_parse_init_from_refuses(value):
    with pytest.raises(ValueError, match="init_from"):
        parse_init_from(value)
