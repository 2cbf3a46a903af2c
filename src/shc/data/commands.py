"""``shc data``: prepare (tokenise and cache) a data source and print its statistics."""

from __future__ import annotations

import argparse
import json

from .config import DataConfig


def register(subparsers: argparse._SubParsersAction) -> None:
    d = DataConfig()
    p = subparsers.add_parser(
        "data",
        help="tokenise a data source into the cache and print its statistics",
        description="Tokenise a data source into the cache (reused when present) and print token and byte counts.",
    )
    p.add_argument("--source", default=d.source, help="'shakespeare', a .txt file or folder, or 'hf:<name or path>'")
    p.add_argument("--tokenizer", default=d.tokenizer, help="'byte', 'bpe' or an HF tokenizer directory")
    p.add_argument("--bpe-vocab-size", type=int, default=d.bpe_vocab_size)
    p.add_argument("--cache-dir", default=d.cache_dir)
    p.add_argument("--hf-split", default=d.hf_split)
    p.add_argument("--hf-text-field", default=d.hf_text_field)
    p.add_argument("--hf-config", default=d.hf_config)
    p.add_argument("--hf-streaming", action="store_true")
    p.add_argument("--hf-max-documents", type=int, default=d.hf_max_documents)
    p.add_argument("--val-fraction", type=float, default=d.val_fraction)
    p.add_argument("--json", action="store_true", help="print the statistics as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .prepare import prepare_data

    cfg = DataConfig(
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
    info = prepare_data(cfg).info
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
