"""Token shards on disk: the layout ``hyperconn data prepare`` writes and training reads.

A shard directory::

    plan.json                   the settings the shards are written with (source, tokenizer,
                                dtype, shard_chars); a rerun with other settings is refused
    shard-00000.train.bin       raw token ids (uint16, or uint32 for vocabularies over 65536),
    shard-00000.val.bin         each document followed by eos
    shard-00000.json            the shard's record: per split its tokens, bytes, documents, SHA-256
    ...
    tokenizer.json              a copy of the BPE when the tokenizer is a trained ``bpe``
    index.json                  written last: plan + budget + totals + every shard's record
                                (removed when a rerun starts, so it marks only a finished run)

Shard ``i`` holds the ``i``-th chunk of the source's documents (``chunks.chunk_documents``), its
training documents in ``.train.bin`` and its held-out documents in ``.val.bin``, so the content of
a shard depends only on the source, the tokenizer and ``shard_chars``, never on how many workers
wrote it. Each file is published atomically (``hyperconn.fileio``), the record after both files, the
index after every record: a file under its final name is complete, and only ``index.json`` marks
a finished directory.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from pathlib import Path

from .._optional import require
from .sources import SHARD_INDEX

np = require("numpy", "hyperconn.data")

SHARD_FORMAT = 1
PLAN = "plan.json"
INDEX = SHARD_INDEX  # written last
BPE_COPY = "tokenizer.json"
SPLITS = ("train", "val")


def shard_file(i: int, split: str) -> str:
    return f"shard-{i:05d}.{split}.bin"


def record_file(i: int) -> str:
    return f"shard-{i:05d}.json"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


class ShardedTokens:
    """One read-only 1-D token array over several shard files, without copying.

    ``parts`` are arrays or ``(path, n_tokens)`` pairs; a path is memory-mapped when first read and
    at most ``max_open`` maps are kept (each holds a file descriptor; a rank reads only its own
    slice, so it opens only the shards in it). Supports ``len``, ``shape``, ``ndim``, ``dtype``,
    integer and slice indexing, and integer-array indexing (what the batchers use; a window may
    cross a shard boundary). ``length`` caps the array at its first ``length`` tokens (a budget)."""

    def __init__(self, parts: list, length: int | None = None, dtype=np.uint16, max_open: int = 64):
        self.dtype = np.dtype(dtype)
        self._parts = [p for p in parts if (p[1] if isinstance(p, tuple) else p.shape[0]) > 0]
        sizes = np.array([p[1] if isinstance(p, tuple) else p.shape[0] for p in self._parts], dtype=np.int64)
        if self._parts and not isinstance(self._parts[0], tuple):
            self.dtype = np.dtype(self._parts[0].dtype)
        self._offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        total = int(self._offsets[-1])
        if length is not None and not 0 <= length <= total:
            raise ValueError(f"length={length!r}: must be in [0, {total}] (the tokens in the shards)")
        self._length = total if length is None else int(length)
        self._open: OrderedDict[int, np.ndarray] = OrderedDict()
        self._max_open = max_open

    @property
    def open_maps(self) -> int:
        """How many shard files are memory-mapped right now (at most ``max_open``)."""
        return len(self._open)

    def _part(self, s: int) -> np.ndarray:
        part = self._parts[s]
        if not isinstance(part, tuple):
            return part
        if s in self._open:
            self._open.move_to_end(s)
            return self._open[s]
        if len(self._open) >= self._max_open:
            self._open.popitem(last=False)
        array = np.memmap(part[0], dtype=self.dtype, mode="r", shape=(part[1],))
        self._open[s] = array
        return array

    @property
    def shape(self) -> tuple[int]:
        return (self._length,)

    ndim = 1

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, key):
        if isinstance(key, slice):
            return self._gather(np.arange(*key.indices(self._length), dtype=np.int64))
        if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
            k = int(key) + self._length if key < 0 else int(key)
            return self._gather(np.array([k], dtype=np.int64))[0]
        return self._gather(np.asarray(key))

    def _gather(self, idx: np.ndarray) -> np.ndarray:
        if idx.dtype.kind not in "iu":
            raise IndexError(f"ShardedTokens takes integer indices, got dtype {idx.dtype}")
        flat = idx.reshape(-1).astype(np.int64)
        if flat.size and (flat.min() < 0 or flat.max() >= self._length):
            raise IndexError(f"index out of range for {self._length} tokens")
        out = np.empty(flat.shape, dtype=self.dtype)
        which = np.searchsorted(self._offsets, flat, side="right") - 1
        for s in np.unique(which):
            mask = which == s
            out[mask] = self._part(int(s))[flat[mask] - self._offsets[s]]
        return out.reshape(idx.shape)

    def __array__(self, dtype=None, copy=None):
        out = self[:]
        return out if dtype is None else out.astype(dtype)


def read_index(directory: str | Path) -> dict:
    path = Path(directory) / INDEX
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: not a finished shard directory (run `hyperconn data prepare`)")
    index = json.loads(path.read_text())
    if index.get("format") != SHARD_FORMAT:
        raise ValueError(f"{path}: shard format {index.get('format')!r}, this version reads {SHARD_FORMAT}")
    return index


def open_shards(directory: str | Path, max_tokens: int | None = None, verify: bool = False):
    """``(index, train, val)``: the index and the two splits as ``ShardedTokens``.

    ``train`` holds the index's ``train_tokens`` (its budget), capped again at ``max_tokens``. Every
    file's size is checked against its record (a truncated shard is refused by name); ``verify``
    also checks every SHA-256."""
    directory = Path(directory)
    index = read_index(directory)
    dtype = np.dtype(index["dtype"])
    parts: dict[str, list[tuple[Path, int]]] = {s: [] for s in SPLITS}
    for record in index["shards"]:
        for split in SPLITS:
            entry = record[split]
            path = directory / entry["file"]
            expected = entry["tokens"] * dtype.itemsize
            size = path.stat().st_size if path.is_file() else None
            if size != expected:
                raise ValueError(
                    f"{path}: {'missing' if size is None else f'{size} bytes'}, the index records {expected}; "
                    "the shard directory is damaged: rerun `hyperconn data prepare` into it"
                )
            if verify and sha256_file(path) != entry["sha256"]:
                raise ValueError(f"{path}: SHA-256 differs from the index; rerun `hyperconn data prepare` into it")
            parts[split].append((path, entry["tokens"]))
    n_train = index["train_tokens"] if max_tokens is None else min(index["train_tokens"], max_tokens)
    return (
        index,
        ShardedTokens(parts["train"], n_train, dtype),
        ShardedTokens(parts["val"], None, dtype),
    )
