"""The stream pipeline: per-rank on-the-fly tokenisation of local HF files; packing against a naive
reference, disjoint ranks, determinism, exact re-seek on resume, the token budget, bad input."""

import numpy as np
import pytest
import torch

from hyperconn.data import ByteTokenizer, DataConfig, prepare_data
from hyperconn.data.sources import open_source
from hyperconn.data.streaming import StreamingBatcher, TrainStream
from hyperconn.data.tokenizers import encode_documents

from .conftest import make_text

DOCS = [make_text(i, 1 + i % 3) for i in range(40)]


def _stream(docs=DOCS, **kw):
    return TrainStream(documents=lambda: iter(docs), description="test docs", **kw)


def _rows(batcher, steps):
    """The windows (x plus y's last token) of ``steps`` steps, concatenated."""
    out = []
    for s in range(steps):
        for m in range(batcher.micro_steps):
            x, y = batcher.batch(s, m)
            out.append(torch.cat([x, y[:, -1:]], dim=1))
    return torch.cat(out).numpy()


def _naive_windows(tokens, seq):
    n = (len(tokens) - 1) // seq
    return np.stack([tokens[k * seq : k * seq + seq + 1] for k in range(n)])


def test_packing_matches_a_naive_reference():
    tok = ByteTokenizer()
    b = StreamingBatcher(_stream(shuffle_windows=1), tok, seq_len=16, batch_size=4, seed=0, encode_chars=50)
    ref = _naive_windows(encode_documents(tok, DOCS), 16)
    got = _rows(b, len(ref) // 4)
    assert np.array_equal(got, ref[: len(got)])  # in order, stride seq_len, across document boundaries
    x, y = b.batch(len(ref) // 4)
    assert torch.equal(x[:, 1:], y[:, :-1])


@pytest.mark.parametrize("world_size", [2, 3])
def test_ranks_tokenise_disjoint_documents_that_cover_the_source(world_size):
    tok = ByteTokenizer()
    seq = 8
    for rank in range(world_size):
        b = StreamingBatcher(_stream(shuffle_windows=1), tok, seq, 2, seed=0, rank=rank, world_size=world_size)
        mine = encode_documents(tok, DOCS[rank::world_size])  # documents j with j % W == rank
        ref = _naive_windows(mine, seq)
        got = _rows(b, len(ref) // 2)
        assert np.array_equal(got, ref[: len(got)])
    # the rank shares partition the documents
    shares = [DOCS[r::world_size] for r in range(world_size)]
    assert sorted(d for s in shares for d in s) == sorted(DOCS) and sum(map(len, shares)) == len(DOCS)


def test_shuffle_is_a_permutation_deterministic_in_the_seed():
    tok = ByteTokenizer()
    stream = _stream(max_tokens=1600, shuffle_windows=8)
    a = _rows(StreamingBatcher(stream, tok, 16, 4, seed=1), 25)
    b = _rows(StreamingBatcher(stream, tok, 16, 4, seed=1), 25)
    c = _rows(StreamingBatcher(stream, tok, 16, 4, seed=2), 25)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    # one pass = the first 1600 tokens: 99 windows, a permutation of the unshuffled ones
    ref = _naive_windows(encode_documents(tok, DOCS)[:1600], 16)
    assert len(ref) == 99
    assert sorted(map(bytes, a[:99])) == sorted(map(bytes, ref.astype(a.dtype)))
    assert not np.array_equal(a[:99], ref)


def test_budget_ends_a_pass_and_the_next_pass_starts_over():
    tok = ByteTokenizer()
    b = StreamingBatcher(_stream(max_tokens=2 * 161, shuffle_windows=1), tok, 16, 5, seed=0, world_size=2, rank=1)
    assert b.rank_budget == 161  # 10 windows of 17 with stride 16 per rank and pass
    rows = _rows(b, 4)
    ref = _naive_windows(encode_documents(tok, DOCS[1::2])[:161], 16)
    assert len(ref) == 10
    assert np.array_equal(rows, np.concatenate([ref, ref]))


def test_resume_reseeks_exactly():
    tok = ByteTokenizer()
    stream = _stream(shuffle_windows=4)
    run = StreamingBatcher(stream, tok, 8, 3, seed=5, micro_steps=2)
    uninterrupted = [run.batch(s, m) for s in range(6) for m in range(2)]
    assert run.replays == 0
    resumed = StreamingBatcher(stream, tok, 8, 3, seed=5, micro_steps=2)
    again = [resumed.batch(s, m) for s in range(3, 6) for m in range(2)]  # a run resumed at step 3
    assert resumed.replays == 1
    for (x, y), (u, v) in zip(again, uninterrupted[6:], strict=True):
        assert torch.equal(x, u) and torch.equal(y, v)
    # asking out of order (a step repeated) replays again, still exactly
    assert torch.equal(resumed.batch(1, 1)[0], uninterrupted[3][0]) and resumed.replays == 2


@pytest.mark.slow
def test_stream_pipeline_on_a_local_jsonl(tmp_path, jsonl_corpus):
    base = dict(source=f"hf:{jsonl_corpus}", hf_text_field="body", hf_streaming=True, cache_dir=str(tmp_path / "c"))
    cached = prepare_data(DataConfig(**base))
    data = prepare_data(DataConfig(**base, pipeline="stream", stream_val_tokens=300, stream_shuffle_windows=1))
    assert data.train is None and data.info["pipeline"] == "stream"
    assert not (tmp_path / "c" / "tokens").exists() or len(list((tmp_path / "c" / "tokens").iterdir())) == 1
    # validation: the first held-out documents, whole, until 300 tokens
    val_docs = [t for s, t in open_source(DataConfig(**base)).documents() if s == "val"]
    n_docs = data.info["val_documents"]
    assert np.array_equal(data.val, cached.val[: len(data.val)])
    assert len(data.val) >= 300 > len(encode_documents(data.tokenizer, val_docs[: n_docs - 1]))
    assert data.val_bytes == sum(len(t.encode()) for t in val_docs[:n_docs])
    # training: one rank reads the cached pipeline's training stream, packed
    b = data.train_batcher(seq_len=32, batch_size=4, seed=0)
    assert isinstance(b, StreamingBatcher)
    got = _rows(b, 10)
    assert np.array_equal(got, _naive_windows(np.asarray(cached.train), 32)[:40])


def test_bad_stream_settings():
    tok = ByteTokenizer()
    with pytest.raises(ValueError, match=r"max_tokens=30 over 2 rank\(s\) leaves 15"):
        StreamingBatcher(_stream(max_tokens=30), tok, 16, 1, seed=0, world_size=2)
    with pytest.raises(ValueError, match="rank 1 of 2 has fewer than seq_len"):
        StreamingBatcher(_stream(["a" * 40, "b"]), tok, 16, 1, seed=0, rank=1, world_size=2).batch(0)
    b = StreamingBatcher(_stream(), tok, 16, 1, seed=0, micro_steps=2)
    with pytest.raises(ValueError, match="micro=2"):
        b.batch(0, 2)
    for kwargs, match in (({"seq_len": 0}, "seq_len=0"), ({"seed": -1}, "seed=-1"), ({"rank": 3}, "rank=3")):
        args = {"stream": _stream(), "tokenizer": tok, "seq_len": 8, "batch_size": 2, "seed": 0, **kwargs}
        with pytest.raises(ValueError, match=match):
            StreamingBatcher(**args)
