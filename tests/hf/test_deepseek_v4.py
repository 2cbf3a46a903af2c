"""DeepSeek-V4's hyper-connections read in this library's convention, on tiny random models: the
recorded H_pre / H_res / H_post reproduce what the transformers modules and decoder layers compute."""

from __future__ import annotations

import importlib
import json

import pytest
import torch

transformers = pytest.importorskip("transformers")
if not hasattr(transformers, "DeepseekV4Config"):
    pytest.skip(f"transformers {transformers.__version__} has no DeepSeek-V4", allow_module_level=True)

from hyperconn.analysis.capture import capture_statistics  # noqa: E402
from hyperconn.diagnostics import MixingRecorder  # noqa: E402
from hyperconn.diagnostics import deepseek_v4 as dsv4  # noqa: E402
from hyperconn.diagnostics import metrics as dg  # noqa: E402
from hyperconn.hf import convert  # noqa: E402
from hyperconn.linalg import sinkhorn_log  # noqa: E402

N, C, VOCAB = 4, 64, 96


def tiny_config(**overrides):
    settings = dict(
        vocab_size=VOCAB, hidden_size=C, moe_intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, head_dim=32, q_lora_rank=32, num_experts_per_tok=2, n_routed_experts=4,
        n_shared_experts=1, o_groups=2, o_lora_rank=16, index_n_heads=2, index_head_dim=16, index_topk=4,
        sliding_window=8, hc_mult=N, hc_sinkhorn_iters=20, max_position_embeddings=256,
        layer_types=["sliding_attention", "compressed_sparse_attention"], mlp_layer_types=["moe", "moe"],
        compress_rates={"compressed_sparse_attention": 4, "heavily_compressed_attention": 8},
        initializer_range=0.2, experts_implementation="eager",
    )  # fmt: skip
    settings.update(overrides)
    return transformers.DeepseekV4Config(**settings)


def tiny_model(dtype=torch.float64, seed: int = 0, **overrides):
    """A random 2-layer DeepSeek-V4 with non-trivial connection biases and scales (not the init's
    zeros and ones), so pre / post / comb differ per stream and comb is far from symmetric."""
    torch.manual_seed(seed)
    model = transformers.DeepseekV4ForCausalLM(tiny_config(**overrides)).to(dtype).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("_hc.base", "_hc.scale", "hc_head.hc_base", "hc_head.hc_scale")):
                p.add_(0.5 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return model


def token_ids(batch: int = 2, seq: int = 12, seed: int = 3) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, seq), generator=torch.Generator().manual_seed(seed))


def _keeper(seen: dict, layer: int, key: str):
    def hook(module, args, kwargs, output):
        seen[(layer, key + "_in")] = (args[0] if args else next(iter(kwargs.values()))).detach()
        seen[(layer, key)] = (output[0] if isinstance(output, tuple) else output).detach()

    return hook


def capture_layers(model, ids):
    """Run ``model`` on ``ids`` under MixingRecorder; return the calls and, per decoder layer, its input
    and output streams, the ffn connection's input streams and the two branch outputs."""
    seen: dict[tuple[int, str], torch.Tensor] = {}
    handles = []
    for i, layer in enumerate(model.model.layers):
        for key, module in (("layer", layer), ("attn", layer.self_attn), ("mlp", layer.mlp),
                            ("ffn_hc", layer.ffn_hc), ("attn_hc", layer.attn_hc)):  # fmt: skip
            handles.append(module.register_forward_hook(_keeper(seen, i, key), with_kwargs=True))
    try:
        with MixingRecorder(model) as rec, torch.no_grad():
            model(ids)
    finally:
        for handle in handles:
            handle.remove()
    return rec.pop(), seen


def mix(call, streams, branch, transpose=False):
    """Our equation: x'_j = sum_i H_res[i, j] x_i + H_post[j] F, per token (streams (T, n, C), F (T, C))."""
    res = call.res.transpose(-1, -2) if transpose else call.res
    return torch.einsum("tij,tic->tjc", res, streams) + call.post.unsqueeze(-1) * branch.unsqueeze(-2)


def relative_error(a, b):
    return float((a - b).norm() / b.norm())


def test_records_two_calls_per_layer_in_depth_order_with_our_shapes():
    model = tiny_model()
    calls, _ = capture_layers(model, token_ids())
    assert [c.name for c in calls] == [f"model.layers.{i}.{k}" for i in range(2) for k in ("attn_hc", "ffn_hc")]
    assert [c.module.layer_index for c in calls] == [0, 0, 1, 1]
    first = calls[0]
    assert first.module.kind == "mhc" and first.module.num_streams == N and first.module.sinkhorn_iters == 20
    assert first.pre.shape == (24, N) and first.res.shape == (24, N, N) and first.post.shape == (24, N)
    assert first.res.dtype == torch.float64
    # DeepSeek-V4's ranges: pre in (eps, 1 + eps), post in (0, 2), comb's columns sum to 1 (eps)
    assert bool((first.pre > 0).all() and (first.pre < 1 + 1e-5).all())
    assert bool((first.post > 0).all() and (first.post < 2).all())
    assert torch.allclose(first.res.sum(-2), torch.ones(24, N, dtype=torch.float64), atol=1e-4)


def test_pre_reproduces_each_modules_collapsed_output():
    model = tiny_model()
    calls, seen = capture_layers(model, token_ids())
    for i in range(2):
        for call, key in zip(calls[2 * i : 2 * i + 2], ("attn_hc", "ffn_hc"), strict=True):
            streams = seen[(i, key + "_in")].reshape(-1, N, C)
            module = getattr(model.model.layers[i], key)
            with torch.no_grad():
                post, comb, collapsed = module(seen[(i, key + "_in")])
            ours = torch.einsum("ti,tic->tc", call.pre, streams)
            assert relative_error(ours, collapsed.reshape(-1, C)) < 1e-5
            assert torch.allclose(call.post, post.reshape(-1, N).double(), atol=1e-6)
            assert torch.allclose(call.res, comb.reshape(-1, N, N).double(), atol=1e-6)


def spread(streams):
    """How far the streams are from all equal: ||X - mean_i x_i||_F / ||X||_F."""
    return relative_error(streams, streams.mean(-2, keepdim=True).expand_as(streams)) if streams.norm() else 0.0


def test_res_and_post_reproduce_the_layers_mixed_streams_and_the_transpose_does_not():
    model = tiny_model()
    calls, seen = capture_layers(model, token_ids())
    distinguishing = 0
    for i in range(2):
        x = seen[(i, "layer_in")].reshape(-1, N, C)
        attn, mlp = seen[(i, "attn")].reshape(-1, C), seen[(i, "mlp")].reshape(-1, C)
        mid_true, out_true = seen[(i, "ffn_hc_in")].reshape(-1, N, C), seen[(i, "layer")].reshape(-1, N, C)
        pairs = ((calls[2 * i], x, attn, mid_true), (calls[2 * i + 1], mid_true, mlp, out_true))
        for call, streams, branch, true in pairs:
            assert relative_error(mix(call, streams, branch), true) < 1e-5
            # H_res[i, j] = comb[i, j]: reading comb the other way round misses by far more than rounding,
            # wherever the streams differ (the first connection sees n copies of the embedding, on which
            # any matrix with unit column and row sums acts alike)
            if spread(streams) > 1e-2:
                distinguishing += 1
                assert relative_error(mix(call, streams, branch, transpose=True), true) > 1e-3
    assert distinguishing == 3


@pytest.mark.slow
def test_logits_are_what_sinkhorn_turns_into_res():
    model = tiny_model(hc_sinkhorn_iters=1000)
    calls, _ = capture_layers(model, token_ids())
    for call in calls:
        # both orders of normalisation converge to the same doubly stochastic matrix (up to the eps
        # DeepSeek-V4 adds to every entry); the transposed logits lead elsewhere
        assert float((sinkhorn_log(call.logits, 1000) - call.res).abs().max()) < 1e-3
        assert float((sinkhorn_log(call.logits.transpose(-1, -2), 1000) - call.res).abs().max()) > 0.1


def test_readout_weights_reproduce_the_heads_collapse():
    model = tiny_model()
    seen = {}
    handle = model.model.hc_head.register_forward_hook(lambda m, a, o: seen.update(x=a[0], y=o))
    try:
        with dsv4.ReadoutRecorder(model) as rec, torch.no_grad():
            model(token_ids())
    finally:
        handle.remove()
    (readout,) = rec.pop()
    assert readout.name == "model.hc_head" and readout.weights.shape == (24, N)
    collapsed = torch.einsum("ti,tic->tc", readout.weights, seen["x"].reshape(-1, N, C))
    assert relative_error(collapsed, seen["y"].reshape(-1, C)) < 1e-5
    assert not torch.allclose(readout.weights, readout.weights.mean(-1, keepdim=True))  # learned, not uniform


def test_max_tokens_keeps_the_first_tokens():
    model = tiny_model()
    ids = token_ids()
    with MixingRecorder(model) as full, torch.no_grad():
        model(ids)
    with MixingRecorder(model, max_tokens=5) as few, torch.no_grad():
        model(ids)
    for a, b in zip(full.pop(), few.pop(), strict=True):
        assert b.res.shape == (5, N, N)
        assert torch.allclose(a.res[:5], b.res, atol=1e-6) and torch.allclose(a.pre[:5], b.pre, atol=1e-6)


def test_a_changed_upstream_formula_is_caught():
    model = tiny_model()
    module = model.model.layers[0].attn_hc
    original = module.forward

    def changed(streams):  # a release that, say, dropped the factor 2 of post
        post, comb, collapsed = original(streams)
        return post / 2, comb, collapsed

    module.forward = changed
    with pytest.raises(RuntimeError, match="H_post.*differs"), MixingRecorder(model), torch.no_grad():
        model(token_ids())


@pytest.mark.slow
def test_capture_statistics_runs_on_deepseek_v4():
    model = tiny_model(dtype=torch.float32)
    batches = [token_ids(seed=s) for s in range(2)]
    result = capture_statistics(model, batches)
    assert [layer.name for layer in result.layers][:2] == ["model.layers.0.attn_hc", "model.layers.0.ffn_hc"]
    assert all(layer.tokens == 48 and layer.sinkhorn_iters == 20 for layer in result.layers)
    assert len(result.layers[0].sinkhorn_error_curve) == 50
    # the last Sinkhorn step normalises the columns: they sum to 1 up to eps
    assert max(layer.max["column_sum_error"] for layer in result.layers) < 1e-4
    # the statistics are those of the recorded matrices, measured independently here
    with MixingRecorder(model) as rec, torch.no_grad():
        for batch in batches:
            model(batch)
    calls = rec.pop()
    for k, layer in enumerate(result.layers):
        res = torch.cat([c.res for c in calls[k::4]])
        assert abs(layer.mean["spectral_norm"] - float(dg.spectral_norm(res).mean())) < 1e-6
        assert torch.allclose(torch.tensor(layer.mean_res, dtype=torch.float64), res.mean(0), atol=1e-6)
    first = torch.cat([c.res for c in calls[0::4]])
    assert abs(result.composite.backward_gain_max[0] - float(dg.backward_gain(first.transpose(-1, -2)).max())) < 1e-6


def test_unsupported_transformers_is_refused(monkeypatch):
    model = tiny_model()
    # the module object transformers is now (importing some of its submodules replaces it in sys.modules)
    installed = importlib.import_module("transformers")
    assert dsv4.check_transformers() == installed.__version__
    monkeypatch.setattr(installed, "__version__", "5.23.1")
    with pytest.raises(RuntimeError, match=r"transformers 5\.23\.1 .*needs transformers >= 5\.24\.0"):
        MixingRecorder(model)
    with pytest.raises(RuntimeError, match=r"5\.23\.1"):
        dsv4.ReadoutRecorder(model)
    monkeypatch.setattr(installed, "__version__", "6.0.0.dev0")
    assert dsv4.check_transformers() == "6.0.0.dev0"
    monkeypatch.setattr(dsv4.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(RuntimeError, match="has no deepseek_v4 model"):
        dsv4.check_transformers()


def test_convert_refuses_deepseek_v4():
    model = tiny_model(dtype=torch.float32)
    with pytest.raises(ValueError, match=r"DeepseekV4ForCausalLM already has hyper-connections.*analyze --hf"):
        convert(model, "shc", 4)
    # a model that merely contains DeepSeek-V4 connections is refused the same way
    wrapper = torch.nn.Sequential(model.model)
    with pytest.raises(ValueError, match="already has hyper-connections"):
        convert(wrapper, "shc", 4)
    assert dsv4.is_deepseek_v4(model) and not dsv4.is_deepseek_v4(torch.nn.Linear(2, 2))


def write_checkpoint(directory, text: str):
    """A tiny saved DeepSeek-V4 plus a word-level tokenizer built with `tokenizers`."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = sorted(set(text.split()))[: VOCAB - 1]
    vocab = {"[UNK]": 0, **{w: i + 1 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")
    model = tiny_model(dtype=torch.float32)
    model.save_pretrained(directory)
    fast.save_pretrained(directory)
    return model


@pytest.mark.slow
def test_analyze_hf_writes_the_three_outputs(tmp_path):
    from hyperconn.analysis.analyze_hf import analyze_hf

    text = " ".join(f"w{(i * 7) % 40} v{i % 13}" for i in range(400))
    write_checkpoint(tmp_path / "ckpt", text)
    (tmp_path / "text.txt").write_text(text)
    data = analyze_hf(tmp_path / "ckpt", tmp_path / "text.txt", tmp_path / "out", tokens=64, window=16)
    out = tmp_path / "out"
    assert {"analysis.md", "analysis.json", "h_res_heatmaps.png", "per_layer.png", "composite_gain.png"} <= {
        p.name for p in out.iterdir()
    }
    saved = json.loads((out / "analysis.json").read_text())
    assert len(saved["layers"]) == 4 and saved["layers"][0]["tokens"] == 64
    assert saved["info"]["windows"] == 4 and saved["info"]["window tokens"] == 16
    readout = saved["readout"]
    assert readout["name"] == "model.hc_head" and readout["tokens"] == 64 and len(readout["mean"]) == N
    assert all(lo <= m <= hi for lo, m, hi in zip(readout["min"], readout["mean"], readout["max"], strict=True))
    assert data["readout"] == readout
    md = (out / "analysis.md").read_text()
    assert "## Readout (hc_head)" in md and "model.layers.1.ffn_hc" in md


@pytest.mark.slow
def test_analyze_hf_refuses_what_it_cannot_read(tmp_path):
    from hyperconn.analysis.analyze_hf import analyze_hf

    text = "a b c d e f g h " * 20
    (tmp_path / "text.txt").write_text(text)
    with pytest.raises(FileNotFoundError, match="no checkpoint directory"):
        analyze_hf(tmp_path / "missing", tmp_path / "text.txt")
    write_checkpoint(tmp_path / "ckpt", text)
    with pytest.raises(ValueError, match="tokens must be an integer >= 1"):
        analyze_hf(tmp_path / "ckpt", tmp_path / "text.txt", tokens=0)
    with pytest.raises(FileNotFoundError, match="no text file"):
        analyze_hf(tmp_path / "ckpt", tmp_path / "none.txt")
    llama = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2))  # fmt: skip
    llama.save_pretrained(tmp_path / "llama")
    with pytest.raises(ValueError, match="not a DeepSeek-V4 checkpoint.*llama"):
        analyze_hf(tmp_path / "llama", tmp_path / "text.txt")


@pytest.mark.parametrize(("length", "window", "count"), [(100, 10, 4), (100, 10, 20), (35, 10, 3), (10, 10, 5)])
def test_windows_are_spread_over_the_text_without_overlap(length, window, count):
    from hyperconn.analysis.analyze_hf import window_starts

    starts = window_starts(length, window, count)
    assert len(starts) == min(count, length // window) and starts[0] == 0
    assert all(b - a >= window for a, b in zip(starts, starts[1:], strict=False))
    if len(starts) > 1:
        assert starts[-1] + window == length  # the last window ends at the end of the text


@pytest.mark.slow
def test_analyze_hf_tokenizer_fallback_and_short_text(tmp_path):
    from hyperconn.analysis.analyze_hf import analyze_hf

    text = " ".join(f"w{i % 30}" for i in range(40))  # 40 tokens: fewer than asked for
    write_checkpoint(tmp_path / "ckpt", text)
    (tmp_path / "text.txt").write_text(text)
    (tmp_path / "ckpt" / "tokenizer.json").rename(tmp_path / "tokenizer.json")
    (tmp_path / "ckpt" / "tokenizer_config.json").unlink()
    with pytest.raises(ValueError, match="has no tokenizer.*--tokenizer"):
        analyze_hf(tmp_path / "ckpt", tmp_path / "text.txt", tmp_path / "out")
    data = analyze_hf(tmp_path / "ckpt", tmp_path / "text.txt", tmp_path / "out", tokens=100, window=16,
                      tokenizer=tmp_path / "tokenizer.json")  # fmt: skip
    assert data["info"]["text tokens"] == 40 and data["info"]["windows"] == 2
    assert data["layers"][0]["tokens"] == 32 and data["readout"]["tokens"] == 32


def test_the_guides_two_recorders_work_together():
    model = tiny_model()
    with MixingRecorder(model) as rec, dsv4.ReadoutRecorder(model) as heads, torch.no_grad():
        model(token_ids())
    assert len(rec.pop()) == 4 and [r.weights.shape for r in heads.pop()] == [(24, N)]


@pytest.mark.slow
def test_the_analyze_command_reads_a_deepseek_v4_directory(tmp_path, capsys):
    from hyperconn.cli import main

    text = " ".join(f"w{(i * 7) % 40} v{i % 13}" for i in range(400))
    write_checkpoint(tmp_path / "ckpt", text)
    (tmp_path / "text.txt").write_text(text)
    out = tmp_path / "out"
    argv = ["analyze", "--hf", str(tmp_path / "ckpt"), "--text", str(tmp_path / "text.txt"), "--tokens", "64",
            "--out", str(out)]
    assert main(argv) == 0
    assert json.loads((out / "analysis.json").read_text())["readout"]["name"] == "model.hc_head"
    assert "4 connections" in capsys.readouterr().out
    # --hf without --text, and neither a run nor --hf: one line, exit 2, nothing written
    for bad in (["analyze", "--hf", str(tmp_path / "ckpt"), "--out", str(tmp_path / "o2")], ["analyze"]):
        assert main(bad) == 2
        assert "error:" in capsys.readouterr().err
    assert not (tmp_path / "o2").exists()
