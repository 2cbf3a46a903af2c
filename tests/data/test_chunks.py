"""chunk_documents: exact boundaries, nothing lost or repeated, bad sizes refused."""

import pytest

from hyperconn.data.chunks import chunk_documents


def _naive_chunks(lengths, max_chars):
    """Reference: close a chunk when the sum of its lengths, recomputed from scratch, reaches max_chars."""
    out, current = [], []
    for n in lengths:
        current.append(n)
        if sum(current) >= max_chars:
            out.append(current)
            current = []
    return out + ([current] if current else [])


@pytest.mark.parametrize("max_chars", [1, 3, 7, 10, 1000])
def test_boundaries_match_the_naive_definition(max_chars):
    lengths = [0, 1, 2, 3, 5, 8, 0, 0, 13, 1, 1, 1, 1, 1, 21, 2, 4]
    docs = ["x" * n for n in lengths]
    chunks = list(chunk_documents(docs, max_chars))
    assert [[len(d) for d in c] for c in chunks] == _naive_chunks(lengths, max_chars)
    assert [d for c in chunks for d in c] == docs  # order kept, nothing dropped or repeated
    for c in chunks[:-1]:
        assert sum(map(len, c)) >= max_chars > sum(map(len, c[:-1]))  # closes at the first item that reaches it
    assert all(chunks)


def test_long_item_is_its_own_chunk_and_text_key():
    items = [("train", "ab"), ("val", "c" * 50), ("train", "d"), ("train", "e")]
    chunks = list(chunk_documents(items, 10, text=lambda item: item[1]))
    assert chunks == [[("train", "ab"), ("val", "c" * 50)], [("train", "d"), ("train", "e")]]
    assert list(chunk_documents([], 5)) == []


def test_many_small_documents_exact_counts():
    docs = [str(i % 10) for i in range(10_001)]  # one character each
    chunks = list(chunk_documents(iter(docs), 100))
    assert [len(c) for c in chunks] == [100] * 100 + [1]
    assert "".join(d for c in chunks for d in c) == "".join(docs)


@pytest.mark.parametrize("bad", [0, -5, 2.5, True, None])
def test_bad_max_chars(bad):
    with pytest.raises(ValueError, match=f"max_chars={bad!r}"):
        list(chunk_documents(["a"], bad))
