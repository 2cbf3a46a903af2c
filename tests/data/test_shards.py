"""hyperconn data prepare: shards round-trip exactly, K workers = 1 worker, a killed prepare resumes to
identical shards, token budgets, refused directories; ShardedTokens against numpy."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from hyperconn.data import DataConfig, TokenBatcher, prepare_data
from hyperconn.data.shard_writer import prepare_shards
from hyperconn.data.shards import INDEX, ShardedTokens, open_shards, sha256_file

SRC = os.path.join(os.path.dirname(__file__), "..", "..", "src")


def _cfg(tmp_path, **kw):
    return DataConfig(cache_dir=str(tmp_path / "cache"), **kw)


def _files(directory):
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def test_shards_round_trip_the_cached_streams(tmp_path, text_folder):
    cfg = _cfg(tmp_path, source=str(text_folder), tokenizer="bpe", bpe_vocab_size=300)
    cached = prepare_data(cfg)
    index = prepare_shards(cfg, tmp_path / "sh", shard_chars=500)
    assert len(index["shards"]) > 3
    data = prepare_data(_cfg(tmp_path, source=f"shards:{tmp_path / 'sh'}", tokenizer="bpe", bpe_vocab_size=300))
    # the same tokens as the one-file cache, in the same order, both splits
    assert np.array_equal(np.asarray(data.train), cached.train)
    assert np.array_equal(np.asarray(data.val), cached.val)
    assert (data.val_bytes, data.train_bytes) == (cached.val_bytes, cached.train_bytes)
    assert data.tokenizer.fingerprint == cached.tokenizer.fingerprint
    assert index["dtype"] == "uint16" and index["vocab_size"] == 300
    for record in index["shards"]:  # the recorded SHA-256 is the file's
        for split in ("train", "val"):
            path = tmp_path / "sh" / record[split]["file"]
            assert sha256_file(path) == record[split]["sha256"]
            assert path.stat().st_size == 2 * record[split]["tokens"]


@pytest.mark.slow
def test_two_workers_write_the_same_shards_as_one(tmp_path, jsonl_corpus, local_tokenizer):
    cfg = _cfg(tmp_path, source=f"hf:{jsonl_corpus}", hf_text_field="body", tokenizer=f"local:{local_tokenizer}")
    one = prepare_shards(cfg, tmp_path / "one", workers=1, shard_chars=400)
    two = prepare_shards(cfg, tmp_path / "two", workers=2, shard_chars=400)
    assert one == two and len(one["shards"]) >= 6
    assert _files(tmp_path / "one") == _files(tmp_path / "two")
    assert one["tokenizer"] == f"hf:{local_tokenizer.name}" and one["val_documents"] > 0


_KILLABLE = textwrap.dedent(
    """
    import sys, time
    from hyperconn.data import DataConfig
    from hyperconn.data.shard_writer import prepare_shards

    def progress(record):
        print("done", record["shard"], flush=True)
        if record["shard"] == 1:
            time.sleep(600)  # the parent kills the whole process group here

    cfg = DataConfig(source=sys.argv[1], tokenizer="bpe", bpe_vocab_size=300, cache_dir=sys.argv[2])
    prepare_shards(cfg, sys.argv[3], workers=2, shard_chars=300, progress=progress)
    """
)


@pytest.mark.slow
def test_killed_prepare_then_rerun_gives_identical_shards(tmp_path, text_folder):
    cfg = _cfg(tmp_path, source=str(text_folder), tokenizer="bpe", bpe_vocab_size=300)
    reference = prepare_shards(cfg, tmp_path / "ref", shard_chars=300)
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": os.path.abspath(SRC)}
    child = subprocess.Popen(
        [sys.executable, "-c", _KILLABLE, str(text_folder), cfg.cache_dir, str(out)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        for line in child.stdout:
            if line.strip() == "done 1":
                break
    finally:
        os.killpg(child.pid, signal.SIGKILL)  # the parent and its worker processes
        child.wait()
    assert not (out / INDEX).exists()  # nothing marks the directory finished
    records = sorted(out.glob("shard-*.json"))
    assert 2 <= len(records) < len(reference["shards"])
    for path in records:  # every shard that has a record is complete
        record = json.loads(path.read_text())
        for split in ("train", "val"):
            assert sha256_file(out / record[split]["file"]) == record[split]["sha256"]
    # make it worse, from outside: half a shard without its record, and a writer's leftover temp file
    last = len(records)
    (out / f"shard-{last:05d}.train.bin").write_bytes(b"\x01\x02\x03")
    (out / f".shard-{last:05d}.val.bin.tmp-999-deadbeef").write_bytes(b"junk")
    kept = (out / "shard-00000.json").stat().st_mtime_ns

    done = []
    index = prepare_shards(cfg, out, workers=1, shard_chars=300, progress=done.append)
    assert index == reference
    assert _files(out) == _files(tmp_path / "ref")
    assert (out / "shard-00000.json").stat().st_mtime_ns == kept  # finished shards were skipped, not rewritten
    assert len(done) == len(reference["shards"])


@pytest.mark.slow
def test_token_budget(tmp_path, text_folder):
    cfg = _cfg(tmp_path, source=str(text_folder))
    full = prepare_shards(cfg, tmp_path / "full", shard_chars=400)
    budget = full["train_tokens"] // 3
    index = prepare_shards(cfg, tmp_path / "b", max_tokens=budget, shard_chars=400)
    counts = np.cumsum([r["train"]["tokens"] for r in index["shards"]])
    assert counts[-1] >= budget > counts[-2]  # stopped after the first shard that reached the budget
    assert index["train_tokens"] == budget and index["train_tokens_written"] == counts[-1]
    assert index["shards"] == full["shards"][: len(index["shards"])]
    data = prepare_data(_cfg(tmp_path, source=f"shards:{tmp_path / 'b'}"))
    assert len(data.train) == budget
    ref = np.asarray(prepare_data(_cfg(tmp_path, source=f"shards:{tmp_path / 'full'}")).train)
    assert np.array_equal(np.asarray(data.train), ref[:budget])
    # data.max_tokens caps again at read time; a larger budget in the same directory adds shards
    small = prepare_data(_cfg(tmp_path, source=f"shards:{tmp_path / 'b'}", max_tokens=100))
    assert np.array_equal(np.asarray(small.train), ref[:100])
    grown = prepare_shards(cfg, tmp_path / "b", max_tokens=2 * budget, shard_chars=400)
    assert grown["shards"] == full["shards"][: len(grown["shards"])] and grown["train_tokens"] == 2 * budget

    # a rerun that dies (here its progress callback raises) leaves no index that could list missing shards
    def die(record):
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        prepare_shards(cfg, tmp_path / "b", max_tokens=budget, shard_chars=400, progress=die)
    assert not (tmp_path / "b" / INDEX).exists()
    shrunk = prepare_shards(cfg, tmp_path / "b", max_tokens=budget, shard_chars=400)
    assert shrunk == index  # back to the smaller budget: the shards past it are gone
    listed = {r[s]["file"] for r in shrunk["shards"] for s in ("train", "val")}
    assert {p.name for p in (tmp_path / "b").glob("shard-*.bin")} == listed


def test_refused_directories_and_settings(tmp_path, text_folder):
    cfg = _cfg(tmp_path, source=str(text_folder))
    prepare_shards(cfg, tmp_path / "sh", shard_chars=400)
    with pytest.raises(ValueError, match="other settings.*shard_chars"):
        prepare_shards(cfg, tmp_path / "sh", shard_chars=500)
    with pytest.raises(ValueError, match="other settings.*tokenizer"):
        prepare_shards(_cfg(tmp_path, source=str(text_folder), tokenizer="bpe", bpe_vocab_size=300), tmp_path / "sh")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a shard directory"):
        prepare_shards(cfg, tmp_path / "other")
    assert [p.name for p in (tmp_path / "other").iterdir()] == ["keep.txt"]  # nothing written
    for kwargs, match in (
        ({"workers": 0}, "workers=0"),
        ({"max_tokens": -1}, "max_tokens=-1"),
        ({"shard_chars": 0}, "shard_chars=0"),
    ):
        with pytest.raises(ValueError, match=match):
            prepare_shards(cfg, tmp_path / "new", **kwargs)
    assert not (tmp_path / "new").exists()
    # the wrong tokenizer at training time, a truncated shard, a directory without an index
    with pytest.raises(ValueError, match="not tokenised with a trained BPE"):
        prepare_data(_cfg(tmp_path, source=f"shards:{tmp_path / 'sh'}", tokenizer="bpe", bpe_vocab_size=300))
    prepare_shards(_cfg(tmp_path, source=str(text_folder), tokenizer="bpe", bpe_vocab_size=300), tmp_path / "shb")
    with pytest.raises(ValueError, match=r"tokenizer='byte' \(byte, .*not the tokenizer the shards.*\(bpe-300"):
        prepare_data(_cfg(tmp_path, source=f"shards:{tmp_path / 'shb'}"))
    name = next(
        r["train"]["file"]
        for r in json.loads((tmp_path / "sh" / INDEX).read_text())["shards"][1:]
        if r["train"]["tokens"]
    )
    victim = tmp_path / "sh" / name
    victim.write_bytes(victim.read_bytes()[:-2])
    with pytest.raises(ValueError, match=f"{name}.*damaged"):
        prepare_data(_cfg(tmp_path, source=f"shards:{tmp_path / 'sh'}"))
    with pytest.raises(FileNotFoundError, match="hyperconn data prepare"):
        prepare_data(_cfg(tmp_path, source=f"shards:{tmp_path / 'other'}"))


def test_sharded_tokens_index_like_the_concatenation():
    rng = np.random.default_rng(0)
    parts = [rng.integers(0, 60000, size=n).astype(np.uint16) for n in (5, 0, 17, 1, 30)]
    whole = np.concatenate(parts)
    st = ShardedTokens(parts)
    assert st.shape == whole.shape and len(st) == 53 and st.ndim == 1 and st.dtype == np.uint16
    idx = rng.integers(0, 53, size=(7, 9))
    assert np.array_equal(st[idx], whole[idx])
    assert np.array_equal(st[3:40], whole[3:40]) and np.array_equal(st[::5], whole[::5])
    assert st[-1] == whole[-1] and st[22] == whole[22]
    with pytest.raises(IndexError):
        st[np.array([53])]
    capped = ShardedTokens(parts, length=20)
    assert np.array_equal(np.asarray(capped), whole[:20])
    with pytest.raises(IndexError):
        capped[20]
    # the batchers see the same windows over shards as over one array (windows cross shard boundaries)
    for rank in (0, 1):
        a = TokenBatcher(st, 6, 8, seed=4, rank=rank, world_size=2).batch(3, 1)
        b = TokenBatcher(whole, 6, 8, seed=4, rank=rank, world_size=2).batch(3, 1)
        assert all(np.array_equal(u.numpy(), v.numpy()) for u, v in zip(a, b, strict=True))


def test_open_shards_verify_catches_a_flipped_byte(tmp_path, text_folder):
    prepare_shards(_cfg(tmp_path, source=str(text_folder)), tmp_path / "sh", shard_chars=400)
    path = tmp_path / "sh" / "shard-00000.train.bin"
    data = bytearray(path.read_bytes())
    data[10] ^= 1
    path.write_bytes(bytes(data))
    open_shards(tmp_path / "sh")  # same size: only the hash can tell
    with pytest.raises(ValueError, match="SHA-256"):
        open_shards(tmp_path / "sh", verify=True)


def test_shard_files_are_mapped_lazily_and_at_most_max_open(tmp_path):
    rng = np.random.default_rng(1)
    parts, arrays = [], []
    for i, n in enumerate((7, 0, 11, 3, 9, 5)):
        a = rng.integers(0, 1 << 20, size=n).astype(np.uint32)
        (tmp_path / f"{i}.bin").write_bytes(a.tobytes())
        parts.append((tmp_path / f"{i}.bin", n))
        arrays.append(a)
    whole = np.concatenate(arrays)
    st = ShardedTokens(parts, dtype=np.uint32, max_open=2)
    assert st.open_maps == 0 and st.dtype == np.uint32  # nothing is opened until read
    assert st[8] == whole[8] and st.open_maps == 1
    idx = rng.integers(0, len(whole), size=200)
    assert np.array_equal(st[idx], whole[idx])  # every file, through a cache of two maps
    assert st.open_maps == 2
    assert np.array_equal(np.asarray(st), whole)


def _prepare_argv(source, out, tmp_path, *extra):
    return ["data", "prepare", "--source", source, "--out", out, "--cache-dir", tmp_path / "cache", "--quiet", *extra]


@pytest.mark.parametrize("layout", ["file", "folder"])
def test_prepare_of_an_empty_source_is_refused_and_writes_nothing(cli, tmp_path, layout):
    if layout == "file":
        source = tmp_path / "src" / "empty.txt"
        source.parent.mkdir()
        source.write_text("")
    else:
        source = tmp_path / "src"
        source.mkdir()
        for name in ("a.txt", "b.txt"):
            (source / name).write_text("")
    out = tmp_path / "out"
    cli.refused(
        _prepare_argv(source, out, tmp_path), r"the (train|val) split of the prepared shards is empty", [tmp_path]
    )
    assert not out.exists()


def test_a_failed_prepare_leaves_nothing_and_the_corrected_rerun_succeeds(cli, tmp_path, text_folder):
    bad = text_folder / "zz.txt"  # read last (files are taken in path order), after shards were written
    bad.write_bytes(b"caf\xe9\n" * 50)
    out = tmp_path / "out"
    argv = _prepare_argv(text_folder, out, tmp_path, "--shard-chars", 400)
    cli.refused(argv, r"zz.txt: not UTF-8 text", [tmp_path])
    assert not out.exists()
    bad.write_text("café\n" * 50, encoding="utf-8")
    rc, _, err = cli.run(argv)
    assert rc == 0, err
    index = json.loads((out / INDEX).read_text())
    assert index["val_bytes"] > 0 and len(index["shards"]) > 2


def test_a_plan_without_a_finished_shard_is_replaced(tmp_path, text_folder):
    out = tmp_path / "sh"
    out.mkdir()
    (out / "plan.json").write_text(json.dumps({"format": 1, "shard_chars": 7, "source": "elsewhere"}))
    (out / "shard-00000.train.bin").write_bytes(b"\0\0")  # an unfinished shard of that plan (no record)
    index = prepare_shards(_cfg(tmp_path, source=str(text_folder)), out, shard_chars=400)
    assert json.loads((out / "plan.json").read_text())["shard_chars"] == 400
    _, train, _ = open_shards(out, verify=True)
    assert len(train) == index["train_tokens"]
    # a plan with a finished shard is still protected
    with pytest.raises(ValueError, match="other settings.*shard_chars"):
        prepare_shards(_cfg(tmp_path, source=str(text_folder)), out, shard_chars=500)
