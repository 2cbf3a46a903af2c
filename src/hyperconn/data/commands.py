"""``hyperconn data``: tokenise a source into the cache and print its statistics;
``hyperconn data prepare``: write token shards for training at scale (``shard_writer.py``)."""

from __future__ import annotations

import argparse
import json

from .bundled import BUNDLED
from .config import DataConfig


def _source_args(p: argparse.ArgumentParser) -> None:
    d = DataConfig()
    p.add_argument(
        "--source",
        default=d.source,
        help=f"a bundled corpus ({', '.join(sorted(BUNDLED))}), a .txt file or folder, "
        "or 'hf:<name or path>' (HF datasets)",
    )
    p.add_argument("--tokenizer", default=d.tokenizer, help="'byte', 'bpe' or 'local:<HF tokenizer directory>'")
    p.add_argument("--bpe-vocab-size", type=int, default=d.bpe_vocab_size)
    p.add_argument("--cache-dir", default=d.cache_dir, help="where a trained BPE (and the token cache) live")
    p.add_argument("--hf-split", default=d.hf_split)
    p.add_argument("--hf-text-field", default=d.hf_text_field)
    p.add_argument("--hf-config", default=d.hf_config)
    p.add_argument("--hf-streaming", action="store_true", help="read the HF dataset as an IterableDataset")
    p.add_argument("--hf-max-documents", type=int, default=d.hf_max_documents)
    p.add_argument("--val-fraction", type=float, default=d.val_fraction)


def _config(args: argparse.Namespace) -> DataConfig:
    return DataConfig(
        source=args.source,
        tokenizer=args.tokenizer,
        bpe_vocab_size=args.bpe_vocab_size,
        cache_dir=args.cache_dir,
        hf_split=args.hf_split,
        hf_text_field=args.hf_text_field,
        hf_config=args.hf_config,
        hf_streaming=args.hf_streaming,
        hf_max_documents=args.hf_max_documents,
        val_fraction=args.val_fraction,
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    from .shard_writer import DEFAULT_SHARD_CHARS

    p = subparsers.add_parser(
        "data",
        help="tokenise a data source into the cache and print its statistics; `hyperconn data prepare` writes shards",
        description="Tokenise a data source into the cache (reused when present) and print token and byte counts.",
    )
    _source_args(p)
    p.add_argument("--json", action="store_true", help="print the statistics as JSON")
    p.set_defaults(func=run)
    sub = p.add_subparsers(dest="data_command")
    q = sub.add_parser(
        "prepare",
        help="tokenise a source once into token shards (train with data.source=shards:<dir>)",
        description=(
            "Tokenise a source into memory-mappable token shards with K worker processes. Shards are published "
            "atomically; rerunning after a crash skips the finished ones; index.json is written last. Train on "
            "them with --set data.source=shards:DIR (and the same --tokenizer)."
        ),
    )
    _source_args(q)
    q.add_argument("--out", required=True, help="the shard directory (created; a rerun finishes it)")
    q.add_argument("--workers", type=int, default=1, help="tokenizer processes (default 1)")
    q.add_argument("--max-tokens", type=int, default=None, help="stop after this many training tokens")
    q.add_argument(
        "--shard-chars", type=int, default=DEFAULT_SHARD_CHARS, help="characters of text per shard (default 2^26)"
    )
    q.add_argument("--quiet", action="store_true", help="no progress lines")
    q.set_defaults(func=run_prepare)
    v = sub.add_parser(
        "verify",
        help="check every shard of a shard directory against the SHA-256 in its index",
        description="Check every shard file's size and SHA-256 against index.json; exit 2 naming the first bad one.",
    )
    v.add_argument("dir", help="a shard directory written by `hyperconn data prepare`")
    v.set_defaults(func=run_verify)


def run(args: argparse.Namespace) -> int:
    from .prepare import prepare_data

    info = prepare_data(_config(args)).info
    if args.json:
        print(json.dumps(info, indent=1, sort_keys=True))
        return 0
    print(f"source     {info['source']}")
    print(f"tokenizer  {info['tokenizer']} (vocab {info['vocab_size']}, eos {info['eos_id']}, {info['dtype']})")
    for split in ("train", "val"):
        tokens, nbytes, docs = (info[f"{split}_{k}"] for k in ("tokens", "bytes", "documents"))
        print(f"{split:<5}      {docs} documents, {nbytes} bytes, {tokens} tokens ({nbytes / tokens:.3f} bytes/token)")
    print(f"cache      {info['path']}")
    return 0


def run_prepare(args: argparse.Namespace) -> int:
    from .shard_writer import prepare_shards

    def progress(record: dict) -> None:
        t, v = record["train"], record["val"]
        print(f"shard {record['shard']:5d}  train {t['tokens']:>12,} tokens  val {v['tokens']:>10,} tokens", flush=True)

    index = prepare_shards(
        _config(args),
        args.out,
        workers=args.workers,
        max_tokens=args.max_tokens,
        shard_chars=args.shard_chars,
        progress=None if args.quiet else progress,
    )
    print(
        f"{args.out}: {len(index['shards'])} shards, {index['train_tokens']:,} training tokens"
        f" ({index['train_tokens_written']:,} written), {index['val_tokens']:,} validation tokens,"
        f" {index['tokenizer']} ({index['dtype']})"
    )
    return 0


def run_verify(args: argparse.Namespace) -> int:
    from .shards import open_shards

    index, train, val = open_shards(args.dir, verify=True)
    n = len(index["shards"])
    print(f"{args.dir}: {n} shards verified ({len(train):,} training, {len(val):,} validation tokens)")
    return 0
