"""``hyperconn train --init-from hf:<dir>``: a tiny saved HF model directory with a locally trained
tokenizer, converted, trained, evaluated and sampled through the CLI."""

from __future__ import annotations

import contextlib
import io
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from hyperconn.cli import main
from hyperconn.data import prepare_data
from hyperconn.hf import HFLanguageModel
from hyperconn.train import load_run, read_metrics
from hyperconn.train.config import load_config
from hyperconn.train.evaluation import validation_loss
from hyperconn.train.rundir import read_done

from .helpers import save_checkpoint_with_tokenizer, tiny_model

TEXT = "\n".join(
    f"the quick brown fox {i} jumps over the lazy dog, to be or not to be, that is the question." for i in range(60)
)


class Plain(nn.Module):
    """An unconverted HF model as ``idx -> logits`` (the reference for the step-0 loss)."""

    def __init__(self, hf):
        super().__init__()
        self.hf = hf

    def forward(self, idx):
        return self.hf(input_ids=idx).logits


def settings(tmp_path, steps=6):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT)
    return [
        f"train.steps={steps}",
        "train.batch_size=4",
        "train.seq_len=16",
        "train.lr=3e-3",
        "train.min_lr=3e-4",
        "train.warmup_steps=1",
        "train.eval_interval=3",
        "train.eval_batches=2",
        "train.log_interval=1",
        "train.checkpoint_interval=3",
        "train.threads=1",
        "train.progress=false",
        "train.device=cpu",
        f"data.source={corpus}",
        f"data.cache_dir={tmp_path / 'cache'}",
    ]


def run_cli(*args) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(list(args)) == 0
    return out.getvalue()


@pytest.mark.parametrize(("family", "tied"), [("qwen3", True), ("llama", False)])
@pytest.mark.slow
def test_train_eval_generate_from_a_local_checkpoint(tmp_path, family, tied):
    source = tmp_path / "hf"
    base, tokenizer = save_checkpoint_with_tokenizer(source, family, tied=tied)
    run = tmp_path / "run"
    sets = [a for s in settings(tmp_path) for a in ("--set", s)]
    run_cli("train", "--init-from", f"hf:{source}", "--kind", "shc", "--num-streams", "4", "--out", str(run), *sets)

    config = (run / "config.yaml").read_text()
    assert f"tokenizer: local:{source}" in config  # the checkpoint's own tokenizer, by default
    rows = read_metrics(run)
    evals = [r for r in rows if r["val_loss"] is not None]
    losses = [r["loss"] for r in rows if r["loss"] is not None]
    assert [r["step"] for r in evals] == [0, 3, 6]

    # step 0: the converted model is the checkpoint's function, so its validation loss is the
    # original model's on the same windows
    cfg = load_config(run / "config.yaml")
    data = prepare_data(cfg.data)
    assert data.tokenizer.vocab_size == len(tokenizer)
    reference = validation_loss(Plain(base), data.val, 16, 4, max_batches=2)
    assert evals[0]["val_loss"] == pytest.approx(reference, abs=1e-4)
    assert losses[-1] < losses[0]
    assert evals[-1]["val_loss"] < evals[0]["val_loss"]

    # the run reloads as a converted HF model with the trained weights
    model, _, run_tokenizer = load_run(run)
    assert isinstance(model, HFLanguageModel) and len(model.connections()) == 2 * base.config.num_hidden_layers
    assert run_tokenizer.vocab_size == len(tokenizer)
    if tied:
        assert model.hf.lm_head.weight is model.hf.model.embed_tokens.weight

    # the final evaluation covers the whole validation split: `hyperconn eval` without --batches
    # reproduces DONE's numbers; with --batches it scores the same spread windows as validation_loss
    done = read_done(run)
    result = json.loads(run_cli("eval", str(run), "--device", "cpu"))
    assert result["step"] == done["step"] == 6
    assert result["val_tokens"] == done["val_tokens"]
    assert result["val_loss"] == pytest.approx(done["val_loss"], abs=1e-5)
    assert result["val_bpb"] == pytest.approx(done["val_bpb"], abs=1e-5)
    windows = json.loads(run_cli("eval", str(run), "--batches", "2", "--device", "cpu"))
    assert windows["val_loss"] == pytest.approx(validation_loss(model, data.val, 16, 4, max_batches=2), abs=1e-5)

    text = run_cli(
        "generate", str(run), "--prompt", "the quick", "--max-new-tokens", "6", "--temperature", "0", "--device", "cpu"
    )
    assert text.startswith("the quick")
    ids = torch.tensor([run_tokenizer.encode("the quick")])
    expected = model.generate(ids, 6, temperature=0)
    assert text.strip() == run_tokenizer.decode(expected[0].tolist()).strip()


@pytest.mark.slow
def test_resume_from_a_checkpoint_reproduces_the_run(tmp_path):
    """Drop the last checkpoint of a finished run (as if it had been killed after step 3) and
    resume: the weights at step 6 are the uninterrupted run's, bit for bit."""
    source = tmp_path / "hf"
    save_checkpoint_with_tokenizer(source, "mistral")
    args = ["--init-from", f"hf:{source}", "--kind", "mhc", "--num-streams", "2"]
    sets = [a for s in settings(tmp_path) for a in ("--set", s)]
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    run_cli("train", *args, "--out", str(whole), *sets)
    shutil.copytree(whole, cut)
    (cut / "DONE").unlink()
    shutil.rmtree(cut / "checkpoints" / "step_00000006")
    run_cli("train", *args, "--out", str(cut), "--resume", *sets)
    final = "checkpoints/step_00000006/model.safetensors"
    a, b = load_file(whole / final), load_file(cut / final)
    assert a.keys() == b.keys() and any(".attn_conn." in k for k in a)
    assert all(torch.equal(a[k], b[k]) for k in a)


def refused(tmp_path, *extra) -> str:
    """Run ``hyperconn train`` expecting a refusal: the error message, and nothing written."""
    sets = [a for s in settings(tmp_path) for a in ("--set", s)]
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main(["train", "--out", str(tmp_path / "run"), *sets, *extra]) != 0
    assert not (tmp_path / "run").exists()
    assert "hyperconn train: error:" in err.getvalue()
    return err.getvalue()


def test_an_unsupported_architecture_is_refused_before_anything_is_written(tmp_path):
    import transformers

    config = transformers.GPT2Config(vocab_size=61, n_embd=32, n_layer=2, n_head=4, n_positions=64)
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path / "gpt2")
    message = refused(tmp_path, "--init-from", f"hf:{tmp_path / 'gpt2'}")
    assert "GPT2LMHeadModel" in message and "LlamaForCausalLM" in message


def test_other_refusals(tmp_path):
    source = tmp_path / "hf"
    save_checkpoint_with_tokenizer(source, "llama")  # max_position_embeddings = 64
    flag = ["--init-from", f"hf:{source}"]
    assert "own tokenizer" in refused(tmp_path, *flag, "--set", "data.tokenizer=byte")
    assert "max_position_embeddings=64" in refused(tmp_path, *flag, "--set", "train.seq_len=65")
    assert "fsdp" in refused(tmp_path, *flag, "--set", "train.fsdp=true")
    assert "init_from must be 'hf:" in refused(tmp_path, "--init-from", str(source))
    assert "no config.json" in refused(tmp_path, "--init-from", f"hf:{tmp_path / 'nothing'}")


def test_a_checkpoint_with_fewer_ids_than_its_tokenizer_is_refused(tmp_path):
    source = tmp_path / "hf"
    save_checkpoint_with_tokenizer(source, "llama")
    tiny_model("llama", vocab_size=40).save_pretrained(source)  # same tokenizer (60 ids), 40 embeddings
    assert "40 token ids, fewer than its tokenizer's 60" in refused(tmp_path, "--init-from", f"hf:{source}")


@pytest.mark.slow
def test_model_stream_dtype_reaches_the_converted_layers(tmp_path):
    """``--set model.stream_dtype=bfloat16`` with ``--init-from hf:``: every converted layer keeps
    bf16 streams, in training and when the run is reloaded."""
    source = tmp_path / "hf"
    save_checkpoint_with_tokenizer(source, "llama")
    run = tmp_path / "run"
    sets = [a for s in [*settings(tmp_path, steps=3), "model.stream_dtype=bfloat16"] for a in ("--set", s)]
    run_cli("train", "--init-from", f"hf:{source}", "--kind", "shc", "--num-streams", "2", "--out", str(run), *sets)
    assert load_config(run / "config.yaml").model.stream_dtype == "bfloat16"
    model, _, _ = load_run(run)
    layers = model.hf.model.layers
    assert len(layers) > 0 and all(layer.stream_dtype == torch.bfloat16 for layer in layers)
    assert read_done(run)["step"] == 3
