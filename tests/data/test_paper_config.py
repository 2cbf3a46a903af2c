"""configs/qwen3-0.6b-shc.yaml: a local tokenizer directory and prepared shards, nothing tokenised at start."""

from pathlib import Path

import numpy as np
import pytest
import yaml

from hyperconn.data import DataConfig, prepare_data
from hyperconn.data.shard_writer import prepare_shards

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "qwen3-0.6b-shc.yaml"


@pytest.mark.slow
def test_paper_config_names_a_local_tokenizer_and_shards(tmp_path, jsonl_corpus, local_tokenizer, monkeypatch):
    data = yaml.safe_load(CONFIG.read_text())["data"]
    assert data["tokenizer"].startswith("local:") and data["source"].startswith("shards:")
    cfg = DataConfig(**data)
    assert not cfg.rank0_builds_cache  # no rank waits for another
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="hyperconn data prepare"):  # the placeholders: a clear error
        cfg.validate()
    # with the user's two paths filled in, the same data section trains on the shards
    source = dict(source=f"hf:{jsonl_corpus}", hf_text_field="body", tokenizer=f"local:{local_tokenizer}")
    prepare_shards(DataConfig(**source, cache_dir="c"), "shards", workers=1, shard_chars=500)
    ready = DataConfig(**{**data, "source": "shards:shards", "tokenizer": f"local:{local_tokenizer}"})
    prepared = prepare_data(ready)
    cached = prepare_data(DataConfig(**source, cache_dir="c"))
    assert np.array_equal(np.asarray(prepared.train), cached.train)
    assert prepared.tokenizer.fingerprint == cached.tokenizer.fingerprint
