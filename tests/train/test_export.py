"""`hyperconn export` of a run started from a Hugging Face checkpoint: DIR/hf is a save_pretrained
folder that `hyperconn.hf.load` reloads to the run's function. (A sharded run's export equals its
full checkpoint: test_sharded_checkpoint.py.)"""

from __future__ import annotations

import pytest
import torch

from hyperconn.cli import main
from hyperconn.train import load_run

pytest.importorskip("transformers")


@pytest.mark.slow
def test_export_of_an_hf_run_writes_a_save_pretrained_folder_that_reloads(tmp_path):
    from tests.hf.helpers import save_checkpoint_with_tokenizer

    from hyperconn.hf import load

    source = tmp_path / "hf"
    save_checkpoint_with_tokenizer(source, "llama")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(f"the quick brown fox {i} jumps over the lazy dog." for i in range(80)))
    sets = ["train.steps=2", "train.batch_size=2", "train.seq_len=16", "train.warmup_steps=1", "train.eval_interval=2",
            "train.eval_batches=1", "train.checkpoint_interval=2", "train.threads=1", "train.progress=false",
            "train.device=cpu", f"data.source={corpus}", f"data.cache_dir={tmp_path / 'cache'}"]  # fmt: skip
    run, out = tmp_path / "run", tmp_path / "export"
    argv = ["train", "--init-from", f"hf:{source}", "--kind", "mhc", "--num-streams", "2", "--out", str(run)]
    assert main([*argv, *[a for s in sets for a in ("--set", s)]]) == 0
    assert main(["export", str(run), "--out", str(out)]) == 0
    assert (out / "model.safetensors").is_file() and (out / "hf" / "config.json").is_file()
    model, _, _ = load_run(run)
    reloaded = load(out / "hf").eval()
    ids = torch.tensor([[1, 5, 9, 3, 7, 2]])
    with torch.no_grad():
        assert torch.allclose(reloaded(input_ids=ids).logits, model(ids), atol=1e-5)
