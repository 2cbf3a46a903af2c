"""The decoder LM: shapes, causality, wiring, KV cache, agreement with independent references."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from tests.support import TINY, perturb, slow_unless

from hyperconn import connection_parameter_count
from hyperconn.connections import constants, shc
from hyperconn.model import ConnectionConfig, LanguageModel, ModelConfig, get_preset

VOCAB = 50


def micro(kind: str = "shc", streams: int | None = None, **overrides) -> LanguageModel:
    cfg = ModelConfig(
        vocab_size=VOCAB,
        dim=16,
        n_layers=2,
        n_heads=4,
        n_kv_heads=2,
        head_dim=8,
        mlp_dim=24,
        max_seq_len=32,
        connection=ConnectionConfig(kind, streams),
        **overrides,
    )
    torch.manual_seed(0)
    model = LanguageModel(cfg)
    perturb(model.connections(), scale=0.3)  # off the near-identity init, so mixing matters
    return model.double()


@pytest.mark.parametrize(
    ("kind", "streams"), [("residual", 1), ("hc", 3), ("mhc", 4), ("shc", 4), ("mhc_lite", 3), ("kromhc", 4)]
)
def test_shapes_dtype_and_causality(kind, streams):
    model = micro(kind, streams)
    idx = torch.randint(0, VOCAB, (2, 12))
    logits = model(idx)
    assert logits.shape == (2, 12, VOCAB) and logits.dtype == torch.float64
    assert torch.isfinite(logits).all()
    changed = idx.clone()
    changed[:, 7:] = (changed[:, 7:] + 1) % VOCAB
    torch.testing.assert_close(model(changed)[:, :7], logits[:, :7])
    assert not torch.allclose(model(changed)[:, 7:], logits[:, 7:])


def reference_attention(attn, x, rope):
    """Independent GQA: repeat KV heads, explicit causal softmax."""
    B, T, _ = x.shape
    q = attn.q_norm(attn.q_proj(x).view(B, T, attn.n_heads, -1)).transpose(1, 2)
    k = attn.k_norm(attn.k_proj(x).view(B, T, attn.n_kv_heads, -1)).transpose(1, 2)
    v = attn.v_proj(x).view(B, T, attn.n_kv_heads, -1).transpose(1, 2)
    q, k = rope(q, 0), rope(k, 0)
    rep = attn.n_heads // attn.n_kv_heads
    k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
    out = torch.softmax(scores, -1) @ v
    return attn.o_proj(out.transpose(1, 2).reshape(B, T, -1))


def test_residual_model_is_the_plain_prenorm_transformer():
    model = micro("residual", 1)
    idx = torch.randint(0, VOCAB, (2, 10))
    h = model.embed(idx)
    for b in model.blocks:
        h = h + reference_attention(b.attn, b.attn_norm(h), model.rope)
        h = h + b.mlp.down_proj(F.silu(b.mlp.gate_proj(b.mlp_norm(h))) * b.mlp.up_proj(b.mlp_norm(h)))
    torch.testing.assert_close(model(idx), model.head(model.norm(h)))


def test_hyper_connected_model_follows_the_wiring():
    """Expand -> per block (attn conn, mlp conn) with H_pre/H_res/H_post -> sum -> norm -> head."""
    model = micro("shc", 4)
    idx = torch.randint(0, VOCAB, (2, 10))
    n = 4
    x = model.embed(idx).unsqueeze(-2).repeat(1, 1, n, 1)
    for b in model.blocks:
        for conn, branch in (
            (b.attn_conn, lambda u, b=b: reference_attention(b.attn, b.attn_norm(u), model.rope)),
            (b.mlp_conn, lambda u, b=b: b.mlp(b.mlp_norm(u))),
        ):
            pre, res, post = conn.mixing(x)
            u = torch.einsum("...s,...sd->...d", pre.to(x.dtype), x)
            x = (
                torch.einsum("...st,...sd->...td", res.to(x.dtype), x)
                + post.to(x.dtype)[..., None] * branch(u)[..., None, :]
            )
    torch.testing.assert_close(model(idx), model.head(model.norm(x.sum(-2))))


def test_connections_are_called_as_modules_in_order():
    model = micro("mhc", 2)
    seen = []
    hooks = [
        c.register_forward_pre_hook(lambda mod, args: seen.append((mod.layer_index, tuple(args[0].shape))))
        for c in model.connections()
    ]
    model(torch.randint(0, VOCAB, (3, 5)))
    for h in hooks:
        h.remove()
    assert seen == [(0, (3, 5, 2, 16)), (0, (3, 5, 2, 16)), (1, (3, 5, 2, 16)), (1, (3, 5, 2, 16))]


def test_rope_scores_depend_only_on_relative_position():
    rope = micro("residual", 1).rope
    q, k = torch.randn(8, dtype=torch.float64), torch.randn(8, dtype=torch.float64)

    def score(i, j):
        return rope(q.view(1, 1, 1, 8), i) @ rope(k.view(1, 1, 1, 8), j).view(8)

    torch.testing.assert_close(score(5, 2), score(13, 10))
    assert not torch.allclose(score(5, 2), score(5, 4))


@pytest.mark.parametrize(("kind", "streams"), [("residual", 1), ("shc", 4), ("hc", 2)])
def test_kv_cache_matches_full_forward(kind, streams):
    model = micro(kind, streams).eval()
    idx = torch.randint(0, VOCAB, (2, 14))
    full = model(idx)
    cache = model.new_cache(2)
    parts = [model(idx[:, :6], 0, cache), model(idx[:, 6:9], 6, cache)]  # prefill, then a chunk
    parts += [model(idx[:, t : t + 1], t, cache) for t in range(9, 14)]  # then token by token
    torch.testing.assert_close(torch.cat(parts, dim=1), full)


@pytest.mark.parametrize(("kind", "streams"), [("residual", 1), ("shc", 4)])
def test_greedy_generate_matches_uncached_decoding(kind, streams):
    model = micro(kind, streams).eval()
    prompt = torch.randint(0, VOCAB, (2, 5))
    out = model.generate(prompt, 8, temperature=0)
    ref = prompt
    for _ in range(8):
        ref = torch.cat([ref, model(ref)[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(out, ref)


@pytest.mark.parametrize("kind", ["shc", "mhc"])
def test_generate_leaves_the_model_trainable_and_its_eval_current(kind, monkeypatch):
    """generate runs in inference mode: nothing it builds (the no-grad path's parameter cache, the
    process-wide constants) may leak into training, and an optimizer step must reach the next
    no-grad forward."""
    monkeypatch.setattr(constants, "_MEMO", {})  # first built inside generate, as in a fresh process
    shc.decode_polynomial.cache_clear()
    model = micro(kind, 4).eval()
    prompt = torch.randint(0, VOCAB, (1, 5))
    model.generate(prompt, 3, temperature=0)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    model(prompt).logsumexp(-1).mean().backward()  # would raise on an inference tensor saved for backward
    opt.step()
    model.eval()
    with torch.no_grad():
        after = model(prompt)
    with torch.enable_grad():
        reference = model(prompt)  # the training forward, which never reads the cache
    torch.testing.assert_close(after, reference.detach())
    assert torch.equal(model.generate(prompt, 3, temperature=0)[:, :5], prompt)


@pytest.mark.slow
def test_generate_past_the_window_and_sampling_controls():
    model = micro("shc", 2).eval()
    prompt = torch.randint(0, VOCAB, (1, 30))
    out = model.generate(prompt, 40, temperature=0.8, top_k=3, generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, 70) and torch.equal(out[:, :30], prompt)
    assert out.min() >= 0 and out.max() < VOCAB
    # top_k=1 is greedy whatever the temperature
    torch.testing.assert_close(
        model.generate(prompt[:, :8], 5, temperature=2.0, top_k=1),
        model.generate(prompt[:, :8], 5, temperature=0),
    )
    with pytest.raises(ValueError, match="temperature"):
        model.generate(prompt, 1, temperature=-1)


def test_sequence_longer_than_the_model_is_refused():
    model = micro("residual", 1)
    with pytest.raises(ValueError, match="max_seq_len=32"):
        model(torch.zeros(1, 33, dtype=torch.long))


def test_head_is_untied_by_default_and_tied_on_request():
    assert micro().head.weight is not micro().embed.weight
    tied = micro(tie_embeddings=True)
    assert tied.head.weight is tied.embed.weight


@pytest.mark.slow
def test_qwen3_06b_parameter_count_on_meta_device():
    cfg = get_preset("qwen3-0.6b").model
    with torch.device("meta"):
        model = LanguageModel(cfg)
    d, L, H, KV, hd, mlp = 1024, 28, 16, 8, 128, 3072
    attention = d * H * hd + 2 * d * KV * hd + H * hd * d + 2 * hd  # q, k, v, o, q_norm, k_norm
    per_layer = attention + 3 * d * mlp + 2 * d  # SwiGLU, two pre-norms
    plain = L * per_layer + d  # + final norm
    assert 0.43e9 < plain < 0.45e9  # Qwen3-0.6B: "0.44B non-embedding parameters"
    # the first and last connections carry no H_res (skip_inert): pre and post groups only
    full, bare = connection_parameter_count("shc", 4, d), connection_parameter_count("shc", 4, d, mix_streams=False)
    assert bare == 4 * d + 4 * d * 8 + 2 + 8  # norm gain, projection onto 2n coefficients, 2 gates, 2n biases
    conn = 2 * L * full - 2 * (full - bare)
    assert model.non_embedding_parameters() == plain + conn
    assert sum(p.numel() for p in model.parameters()) == plain + conn + 151936 * d  # tied head
    assert all(p.device.type == "meta" for p in model.parameters())


def _micro_config(kind: str, streams: int) -> ModelConfig:
    return ModelConfig(
        vocab_size=VOCAB, dim=16, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=8, mlp_dim=24, max_seq_len=32,
        connection=ConnectionConfig(kind, streams),
    )


@pytest.mark.parametrize(
    ("kind", "streams"),
    [
        slow_unless((kind, n) == ("shc", 4), kind, n)
        for kind, n in [("residual", 1), ("hc", 3), ("mhc", 4), ("shc", 4), ("shc", 2)]
    ],
)
def test_meta_build_then_reset_parameters_equals_fresh_init(kind, streams):
    """Deferred init: build on meta, to_empty, reset_parameters under the same seed == built directly.
    Covers every connection's parameters and the rotary tables (connections used to be skipped)."""
    cfg = _micro_config(kind, streams)
    fresh = LanguageModel(cfg)
    torch.manual_seed(0)
    fresh.reset_parameters()  # submodules' own inits drew from the RNG first: re-draw from a known state
    with torch.device("meta"):
        deferred = LanguageModel(cfg)
    deferred.to_empty(device="cpu")
    torch.manual_seed(0)
    deferred.reset_parameters()
    fresh_state = fresh.state_dict()
    for name, value in deferred.state_dict().items():
        assert torch.equal(value, fresh_state[name]), name
    assert torch.equal(deferred.rope.cos, fresh.rope.cos)
    idx = torch.randint(0, VOCAB, (2, 9))
    assert torch.equal(deferred(idx), fresh(idx))


def test_reset_parameters_resets_the_connections():
    model = micro("shc", 4)  # connections perturbed
    model.reset_parameters()
    for conn in model.connections():
        # float32, as is `value` below; the first and last are built without H_res (skip_inert)
        fresh = type(conn)(conn.num_streams, conn.dim, conn.layer_index, mix_streams=conn.mixes_streams)
        assert conn.state_dict().keys() == fresh.state_dict().keys()
        for name, value in fresh.state_dict().items():
            assert torch.equal(conn.state_dict()[name].float(), value), name


@pytest.mark.parametrize("kind", ["hc", "shc"])
def test_generate_and_eval_follow_fused_adamw_and_data_edits(kind):
    """Fused AdamW and ``.data`` writes leave ``_version`` alone: generation and no-grad evaluation
    after them equal a fresh model loaded from the same weights (greedy tokens, exact logits)."""
    cfg = ModelConfig(**TINY, connection=ConnectionConfig(kind=kind, num_streams=4))
    torch.manual_seed(0)
    model = LanguageModel(cfg)
    idx = torch.randint(cfg.vocab_size, (2, 9))
    model.generate(idx[:1, :3], 4, temperature=0.0)  # a generate before training: a cache would keep it
    with torch.no_grad():
        model(idx)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-2, fused=True)
    for _ in range(4):
        logits = model(idx[:, :-1])
        torch.nn.functional.cross_entropy(logits.flatten(0, 1), idx[:, 1:].flatten()).backward()
        opt.step()
        opt.zero_grad()
    for conn in model.connections():
        for p in conn.parameters():
            p.data.add_(0.05 * torch.randn_like(p))
    fresh = LanguageModel(cfg)
    fresh.load_state_dict(model.state_dict())
    fresh.eval()
    model.eval()
    with torch.enable_grad():
        expected = fresh(idx).detach()
    for context in (torch.no_grad, torch.inference_mode):
        with context():
            torch.testing.assert_close(model(idx), expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(model.generate(idx[:1, :3], 6, temperature=0.0), fresh.generate(idx[:1, :3], 6, temperature=0.0))
