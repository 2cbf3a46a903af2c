"""prepare_data: memmap round trip, cache reuse, atomic writes, dtypes, bits per byte."""

import math

import numpy as np
import pytest

from hyperconn.data import DataConfig, PreparedData, prepare_data, shakespeare
from hyperconn.data import prepare as prepare_module
from hyperconn.data.prepare import token_dtype

from .conftest import make_text


@pytest.mark.slow
def test_shakespeare_bytes_round_trip(tmp_path):
    data = prepare_data(DataConfig(cache_dir=str(tmp_path)))
    train_works, val_works = shakespeare.split_works()
    assert isinstance(data.train, np.memmap) and data.train.dtype == np.uint16
    assert data.train.flags.writeable is False
    # each work's UTF-8 bytes followed by eos (256), in the recorded order
    eos = np.array([256], dtype=np.uint16)
    for works, stream in ((train_works, data.train), (val_works, data.val)):
        expected = np.concatenate([np.concatenate([np.frombuffer(w.text.encode(), np.uint8), eos]) for w in works])
        assert np.array_equal(stream, expected)
    assert data.val_bytes == sum(len(w.text.encode()) for w in val_works) == shakespeare.CORPUS.manifest()["val_bytes"]
    assert data.n_val_tokens == data.val_bytes + len(val_works)
    assert data.info["train_documents"] == len(train_works)
    assert data.tokenizer.decode(data.val[:100].tolist()) == val_works[0].text[:100]


def test_cache_is_reused(tmp_path, text_folder, monkeypatch):
    cfg = DataConfig(source=str(text_folder), cache_dir=str(tmp_path / "c"))
    first = prepare_data(cfg)
    monkeypatch.setattr(prepare_module, "_write_tokens", lambda *a: pytest.fail("cache not reused"))
    second = prepare_data(cfg)
    assert second.info["path"] == first.info["path"]
    assert np.array_equal(first.train, second.train) and np.array_equal(first.val, second.val)
    entries = list((tmp_path / "c" / "tokens").iterdir())
    assert [e.name for e in entries] == [first.info["path"].rsplit("/", 1)[-1]]  # no temp leftovers
    # other settings or other content -> another cache entry
    (text_folder / "doc0.txt").write_text(make_text(123, 10), encoding="utf-8")
    with pytest.raises(pytest.fail.Exception):
        prepare_data(cfg)


def test_failed_write_leaves_nothing(tmp_path):
    path = tmp_path / "one.txt"
    path.write_text("a single line without a later line start", encoding="utf-8")
    cfg = DataConfig(source=str(path), cache_dir=str(tmp_path / "c"), val_fraction=0.999)
    with pytest.raises(ValueError, match="train split is empty"):
        prepare_data(cfg)
    assert list((tmp_path / "c" / "tokens").iterdir()) == []


def test_token_dtype():
    assert token_dtype(257) == np.uint16
    assert token_dtype(65536) == np.uint16  # ids 0..65535
    assert token_dtype(65537) == np.uint32
    assert token_dtype(151936) == np.uint32


def test_bits_per_byte_hand_made():
    # 12 val tokens over 8 bytes at ln(2) nats per token = 1 bit per token -> 12 / 8 bits per byte
    data = PreparedData(tokenizer=None, train=np.zeros(4), val=np.zeros(12), val_bytes=8)
    assert data.bits_per_byte(math.log(2)) == pytest.approx(1.5)
    assert data.bits_per_byte(0.0) == 0.0
    assert data.bits_per_byte(2.0) == pytest.approx(2.0 * 12 / (8 * math.log(2)))
