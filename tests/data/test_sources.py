"""Local file / folder and HF dataset sources: whole-document splits, streaming equals non-streaming."""

import json

import numpy as np
import pytest

from hyperconn.data import ByteTokenizer, DataConfig, prepare_data
from hyperconn.data.sources import choose_val_files, is_val_document, open_source, split_text_tail

from .conftest import make_text


def _docs(cfg):
    out = {"train": [], "val": []}
    for split, text in open_source(cfg).documents():
        out[split].append(text)
    return out


def _decode_docs(tokens, tok):
    """Split a token stream at eos and decode each document."""
    ids = np.asarray(tokens)
    ends = np.flatnonzero(ids == tok.eos_id)
    assert ends.size and ends[-1] == ids.size - 1  # every document ends with eos
    starts = np.concatenate([[0], ends[:-1] + 1])
    return [tok.decode(ids[s:e].tolist()) for s, e in zip(starts, ends, strict=True)]


@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.5])
def test_split_text_tail_cuts_at_a_line_start(fraction):
    text = make_text(3, 200)
    train, val = split_text_tail(text, fraction)
    assert train + val == text
    assert train.endswith("\n") and val
    assert len(val) <= fraction * len(text) + 1  # at most the requested share (moved to the next line)
    assert len(val) >= fraction * len(text) - max(map(len, text.splitlines(keepends=True)))


def test_single_file_source(tmp_path):
    path = tmp_path / "one.txt"
    path.write_text(make_text(5, 300), encoding="utf-8")
    cfg = DataConfig(source=str(path), cache_dir=str(tmp_path / "c"), val_fraction=0.2)
    docs = _docs(cfg)
    assert len(docs["train"]) == len(docs["val"]) == 1
    assert docs["train"][0] + docs["val"][0] == path.read_text(encoding="utf-8")
    data = prepare_data(cfg)
    assert data.val_bytes == len(docs["val"][0].encode())
    assert _decode_docs(data.val, data.tokenizer) == docs["val"]


def test_folder_holds_out_whole_files(tmp_path, text_folder):
    cfg = DataConfig(source=str(text_folder), cache_dir=str(tmp_path / "c"), val_fraction=0.2)
    docs = _docs(cfg)
    files = sorted(text_folder.rglob("*.txt"), key=lambda p: p.relative_to(text_folder).as_posix())
    contents = [p.read_text(encoding="utf-8") for p in files]
    assert sorted(docs["train"] + docs["val"]) == sorted(contents)  # every .txt file once, notes.md skipped
    assert docs["train"] and docs["val"]
    total = sum(len(c.encode()) for c in contents)
    val_bytes = sum(len(c.encode()) for c in docs["val"])
    assert val_bytes >= 0.2 * total
    data = prepare_data(cfg)
    assert data.val_bytes == val_bytes
    assert _decode_docs(data.train, data.tokenizer) == [c for c in contents if c in docs["train"]]


@pytest.mark.parametrize("fraction", [0.05, 0.3, 0.9])
def test_choose_val_files(fraction):
    sizes = {f"f{i}.txt": 100 + 37 * i for i in range(12)}
    val = choose_val_files(sizes, fraction)
    assert 1 <= len(val) < len(sizes)
    covered = sum(sizes[v] for v in val) >= fraction * sum(sizes.values())
    assert covered or len(val) == len(sizes) - 1  # stops at the share, or keeps one training file
    assert choose_val_files(sizes, fraction) == val


@pytest.mark.parametrize(("fraction", "n"), [(0.1, 100), (0.25, 17), (1 / 3, 30), (0.07, 1000)])
def test_is_val_document_holds_out_floor_n_f(fraction, n):
    held = [k for k in range(n) if is_val_document(k, fraction)]
    assert len(held) == int(n * fraction + 1e-9)
    if len(held) > 1:  # evenly spread
        gaps = np.diff(held)
        assert gaps.max() - gaps.min() <= 1


def _rows(n):
    return [{"text": make_text(i, 3) if i % 7 else "", "id": i} for i in range(n)]


@pytest.fixture
def saved_dataset(tmp_path):
    import datasets

    path = tmp_path / "ds"
    datasets.DatasetDict({"train": datasets.Dataset.from_list(_rows(60))}).save_to_disk(str(path))
    return path


@pytest.mark.slow
def test_hf_saved_dataset_streaming_equals_in_memory(tmp_path, saved_dataset):
    base = dict(source=f"hf:{saved_dataset}", val_fraction=0.25)
    plain = prepare_data(DataConfig(**base, cache_dir=str(tmp_path / "a")))
    streamed = prepare_data(DataConfig(**base, cache_dir=str(tmp_path / "b"), hf_streaming=True))
    texts = [r["text"] for r in _rows(60) if r["text"]]  # empty documents are skipped
    val = [t for k, t in enumerate(texts) if is_val_document(k, 0.25)]
    train = [t for k, t in enumerate(texts) if not is_val_document(k, 0.25)]
    tok = ByteTokenizer()
    assert _decode_docs(plain.val, tok) == val
    assert _decode_docs(plain.train, tok) == train
    assert np.array_equal(plain.train, streamed.train) and np.array_equal(plain.val, streamed.val)
    assert plain.val_bytes == streamed.val_bytes == sum(len(t.encode()) for t in val)


# the in-memory case stays fast: the one fast test of hyperconn.data.hf_datasets (datasets is a heavy import)
@pytest.mark.parametrize("streaming", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_hf_json_file_with_field_and_max_documents(tmp_path, streaming):
    path = tmp_path / "rows.jsonl"
    rows = [{"body": make_text(i, 2), "n": i} for i in range(40)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    cfg = DataConfig(
        source=f"hf:{path}",
        hf_text_field="body",
        hf_max_documents=20,
        hf_streaming=streaming,
        cache_dir=str(tmp_path / "c"),
    )
    docs = _docs(cfg)
    assert docs["train"] + docs["val"] != []
    assert len(docs["train"]) + len(docs["val"]) == 20
    assert docs["val"] == [rows[9]["body"], rows[19]["body"]]
    with pytest.raises(ValueError, match="hf_text_field='missing'"):
        _docs(DataConfig(**{**cfg.__dict__, "hf_text_field": "missing"}))


@pytest.mark.slow
def test_hf_missing_split_is_named(tmp_path, saved_dataset):
    with pytest.raises(ValueError, match="hf_split='validation'"):
        _docs(DataConfig(source=f"hf:{saved_dataset}", hf_split="validation", cache_dir=str(tmp_path / "c")))
