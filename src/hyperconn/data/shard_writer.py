"""``prepare_shards``: tokenise a source once into a shard directory (``shards.py``), in parallel.

The parent process reads the source's documents in order and cuts them into chunks of
``shard_chars`` characters; worker processes (``spawn``) tokenise the chunks and publish one shard
each; the parent takes the results back in order, so the output does not depend on ``workers``.
A shard whose record is present (and whose files have the recorded sizes) is skipped, so a rerun
after a crash redoes only the unfinished shards. Nothing is written before the source's first two
chunks have been read, so a source that fits in one chunk with an empty split (an empty file, say)
is refused with ``out_dir`` untouched; a prepare that still ends with an empty split removes what it
wrote; and a directory whose plan has no finished shard yet (a prepare that failed early) takes
the new plan instead of refusing it. With ``max_tokens`` the parent stops reading
after the first shard that brings the training tokens to the budget; the index then records
``train_tokens = max_tokens`` (readers use exactly that many).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from multiprocessing import get_context
from pathlib import Path

from .._optional import require
from ..fileio import atomic_path, atomic_write_bytes, fsync_dir, remove_temps, write_json
from .chunks import ENCODE_CHARS, chunk_documents
from .config import DataConfig, resolve_path
from .prepare import resolve_tokenizer, token_dtype
from .shards import BPE_COPY, INDEX, PLAN, SHARD_FORMAT, SPLITS, record_file, shard_file
from .sources import ShardsSource
from .tokenizers import BPETokenizer, encode_documents, tokenizer_from_spec, tokenizer_spec

np = require("numpy", "hyperconn data prepare")

DEFAULT_SHARD_CHARS = 1 << 26  # 64 Mi characters of text: ~16M tokens for a 4-bytes/token BPE


@dataclass(frozen=True)
class _Chunk:
    index: int
    texts: dict[str, list[str]]  # split -> documents


def prepare_shards(
    cfg: DataConfig,
    out_dir: str | Path,
    workers: int = 1,
    max_tokens: int | None = None,
    shard_chars: int = DEFAULT_SHARD_CHARS,
    progress: Callable[[dict], None] | None = None,
) -> dict:
    """Write (or finish) the shard directory ``out_dir`` for ``cfg``'s source and tokenizer; return
    its index. ``progress(record)`` is called after each shard, in order. Only one prepare may write
    a directory at a time."""
    _check_int("workers", workers, 1)
    _check_int("shard_chars", shard_chars, 1)
    if max_tokens is not None:
        _check_int("max_tokens", max_tokens, 1)
    source = cfg.validate()
    if isinstance(source, ShardsSource):
        raise ValueError(f"source={cfg.source!r}: already shards; prepare reads a text source")
    out = resolve_path(str(out_dir))
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: exists and is not a directory")
    tok = resolve_tokenizer(cfg, source)
    dtype = token_dtype(tok.vocab_size)
    plan = {
        "format": SHARD_FORMAT,
        "source": source.description,
        "source_fingerprint": source.fingerprint(),
        "tokenizer": tok.name,
        "tokenizer_fingerprint": tok.fingerprint,
        "vocab_size": tok.vocab_size,
        "eos_id": tok.eos_id,
        "dtype": dtype.name,
        "shard_chars": shard_chars,
    }
    pieces = chunk_documents(source.documents(), shard_chars, text=lambda doc: doc[1])
    head = list(itertools.islice(pieces, 2))
    if len(head) < 2:  # the whole source has been read: refuse an empty split before writing anything
        docs = head[0] if head else []
        for split in SPLITS:
            if not any(text for s, text in docs if s == split):
                raise ValueError(_empty_split(source.description, split))
    created = not out.exists()
    fresh = _claim(out, plan)  # no finished shard before this run: a data error removes what it wrote
    if isinstance(tok, BPETokenizer):
        atomic_write_bytes(out / BPE_COPY, tok.path.read_bytes())

    chunks = (
        _Chunk(i, {s: [t for split, t in docs if split == s] for s in SPLITS})
        for i, docs in enumerate(itertools.chain(head, pieces))
    )
    records, train_total = [], 0
    results = _write_all(chunks, out, tokenizer_spec(tok), dtype.str, workers)
    try:
        for record in results:
            records.append(record)
            train_total += record["train"]["tokens"]
            if progress is not None:
                progress(record)
            if max_tokens is not None and train_total >= max_tokens:
                break
        _remove_shards_after(out, len(records))
        totals = {f"{s}_{k}": sum(r[s][k] for r in records) for s in SPLITS for k in ("tokens", "bytes", "documents")}
        for split in SPLITS:
            if totals[f"{split}_bytes"] == 0:  # (its tokens would be the eos of empty documents)
                raise ValueError(_empty_split(source.description, split))
    except ValueError:  # the source's content (not a crash): rerunning the same plan would fail again
        results.close()
        if fresh:
            _abandon(out, created)
        raise
    finally:
        results.close()  # stops the workers; shards written past the budget were removed above
    index = {
        **plan,
        **totals,
        "max_tokens": max_tokens,
        "train_tokens_written": totals["train_tokens"],
        "train_tokens": min(totals["train_tokens"], max_tokens or totals["train_tokens"]),
        "shards": records,
    }
    write_json(out / INDEX, index, indent=1, sort_keys=True)
    return index


def _empty_split(description: str, split: str) -> str:
    return (
        f"{description}: the {split} split of the prepared shards is empty (no text); "
        "use more text, a larger --max-tokens or another val_fraction"
    )


def _has_finished_shard(out: Path) -> bool:
    return any(out.glob("shard-*.json"))


def _abandon(out: Path, created: bool) -> None:
    """Remove what a prepare that cannot succeed wrote (its plan, shards, BPE copy); ``out`` too if
    this prepare created it."""
    for path in [*out.glob("shard-*"), out / PLAN, out / BPE_COPY]:
        path.unlink(missing_ok=True)
    remove_temps(out)
    if created and not any(out.iterdir()):
        out.rmdir()


def _claim(out: Path, plan: dict) -> bool:
    """Create ``out`` or check that it holds shards of the same plan (a plan without a finished
    shard is replaced); drop crash leftovers. True if ``out`` holds no finished shard."""
    out.mkdir(parents=True, exist_ok=True)
    plan_path = out / PLAN
    if plan_path.is_file():
        old = json.loads(plan_path.read_text())
        diffs = sorted(k for k in set(old) | set(plan) if old.get(k) != plan.get(k))
        if diffs and not _has_finished_shard(out):
            _remove_shards_after(out, 0)  # unfinished shard files of the abandoned plan
        elif diffs:
            raise ValueError(
                f"{out} holds shards prepared with other settings ({', '.join(diffs)} differ); "
                "use another --out or delete that directory"
            )
    elif any(not p.name.startswith(".") for p in out.iterdir()):
        raise ValueError(f"{out} is not empty and holds no {PLAN}: not a shard directory; use another --out")
    remove_temps(out)
    # until this run writes its own index the directory is unfinished: a rerun with a smaller budget
    # removes shards the old index lists, and a kill in between must not leave that index behind
    (out / INDEX).unlink(missing_ok=True)
    fsync_dir(out)
    write_json(plan_path, plan, indent=1, sort_keys=True)
    return not _has_finished_shard(out)


def _finished_record(out: Path, i: int, itemsize: int) -> dict | None:
    path = out / record_file(i)
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    for split in SPLITS:
        f = out / record[split]["file"]
        if not f.is_file() or f.stat().st_size != record[split]["tokens"] * itemsize:
            return None
    return record


def write_shard(out: Path, chunk: _Chunk, spec: tuple, dtype: str) -> dict:
    """Tokenise one chunk, publish its two files, then its record (the mark that it is done).

    Encoded ``ENCODE_CHARS`` at a time and streamed to the temporary file, so a worker holds the
    chunk's text and one batch of ids, never the shard's ids as Python lists."""
    tok = _tokenizer(spec)
    itemsize = np.dtype(dtype).itemsize
    record: dict = {"shard": chunk.index}
    for split in SPLITS:
        texts = chunk.texts[split]
        name = shard_file(chunk.index, split)
        digest, n_bytes = hashlib.sha256(), 0
        with atomic_path(out / name) as tmp, open(tmp, "wb") as f:
            for batch in chunk_documents(texts, ENCODE_CHARS):
                data = encode_documents(tok, batch).astype(dtype).tobytes()
                f.write(data)
                digest.update(data)
                n_bytes += len(data)
        record[split] = {
            "file": name,
            "tokens": n_bytes // itemsize,
            "bytes": sum(len(t.encode("utf-8")) for t in texts),
            "documents": len(texts),
            "sha256": digest.hexdigest(),
        }
    write_json(out / record_file(chunk.index), record, indent=None, sort_keys=True)
    return record


def _worker_write_shard(out: str, chunk: _Chunk, spec: tuple, dtype: str) -> dict:
    # K worker processes each running the tokenizer's own thread pool would oversubscribe the CPUs
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    return write_shard(Path(out), chunk, spec, dtype)


@lru_cache(maxsize=2)
def _tokenizer(spec: tuple):
    return tokenizer_from_spec(spec)


def _write_all(chunks: Iterator[_Chunk], out: Path, spec: tuple, dtype: str, workers: int) -> Iterator[dict]:
    """Records of every chunk, in order; finished shards are reused, the rest written."""
    itemsize = np.dtype(dtype).itemsize
    if workers == 1:
        for chunk in chunks:
            yield _finished_record(out, chunk.index, itemsize) or write_shard(out, chunk, spec, dtype)
        return
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"))
    pending: deque[Future | dict] = deque()
    try:
        for chunk in chunks:
            done = _finished_record(out, chunk.index, itemsize)
            pending.append(done or pool.submit(_worker_write_shard, str(out), chunk, spec, dtype))
            while len(pending) >= 2 * workers:  # bounded read-ahead: at most 2 chunks per worker in memory
                yield _result(pending.popleft())
        while pending:
            yield _result(pending.popleft())
    finally:
        for item in pending:
            if isinstance(item, Future):
                item.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


def _result(item: Future | dict) -> dict:
    return item if isinstance(item, dict) else item.result()


def _remove_shards_after(out: Path, n: int) -> None:
    """Delete shards ``>= n`` (written ahead of a budget, or left by a run with a larger one)."""
    for path in out.glob("shard-*"):
        if int(path.name.split(".")[0].split("-")[1]) >= n:
            path.unlink()


def _check_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}={value!r}: must be an integer >= {minimum}")
