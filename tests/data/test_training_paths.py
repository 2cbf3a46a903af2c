"""The trainer on the two scale paths: shards give the same run as the cache they were made from;
a stream run resumed from a checkpoint reproduces the uninterrupted run's losses exactly."""

import pytest
from tests.support import micro_settings

from hyperconn.data import DataConfig
from hyperconn.data.shard_writer import prepare_shards
from hyperconn.train import build_config, read_metrics, train

pytestmark = pytest.mark.slow  # both tests train (and prepare shards or stream a corpus)


def _losses(run_dir):
    return [(r["step"], r["loss"]) for r in read_metrics(run_dir) if r["loss"] is not None]


def _cfg(tmp_path, name, steps, *overrides):
    out = str(tmp_path / name)
    # two micro-batches per step: a resumed stream must replay both
    settings = micro_settings(f"train.steps={steps}", "train.grad_accum=2")
    return build_config("demo", overrides=[*settings, *overrides], out=out)


def test_training_on_shards_equals_training_on_the_cache(tmp_path, text_folder):
    cache = f"data.cache_dir={tmp_path / 'c'}"
    prepare_shards(DataConfig(source=str(text_folder), cache_dir=str(tmp_path / "c")), tmp_path / "sh", shard_chars=500)
    cached = train(_cfg(tmp_path, "cached", 4, f"data.source={text_folder}", cache))
    sharded = train(_cfg(tmp_path, "sharded", 4, f"data.source=shards:{tmp_path / 'sh'}", cache))
    assert _losses(sharded) == _losses(cached) and len(_losses(cached)) == 4


def test_stream_run_resumes_exactly(tmp_path, jsonl_corpus):
    data = [
        f"data.source=hf:{jsonl_corpus}",
        "data.hf_text_field=body",
        "data.hf_streaming=true",
        "data.pipeline=stream",
        "data.stream_val_tokens=200",
        "data.stream_shuffle_windows=8",
        f"data.cache_dir={tmp_path / 'c'}",
    ]
    full = train(_cfg(tmp_path, "full", 6, *data))
    cut = train(_cfg(tmp_path, "cut", 3, *data))  # stops with a checkpoint at step 3
    train(_cfg(tmp_path, "cut", 6, *data), resume=True)  # a fresh process would replay the stream to step 3
    assert _losses(cut) == _losses(full) and [s for s, _ in _losses(full)] == list(range(1, 7))
    assert not (tmp_path / "c" / "tokens").exists()  # nothing was tokenised into a cache
