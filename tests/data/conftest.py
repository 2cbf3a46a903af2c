import random

import pytest

WORDS = [
    "thou",
    "art",
    "more",
    "lovely",
    "and",
    "more",
    "temperate",
    "rough",
    "winds",
    "do",
    "shake",
    "the",
    "darling",
    "buds",
    "of",
    "may",
    "naïve",
    "café",
    "ℵ",
    "🌹",
]


def make_text(seed: int, n_lines: int) -> str:
    rng = random.Random(seed)
    return "".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))) + "\n" for _ in range(n_lines))


@pytest.fixture
def text_folder(tmp_path):
    """Six small UTF-8 files (non-ASCII included), one in a sub-folder, plus a non-.txt file to ignore."""
    root = tmp_path / "texts"
    (root / "sub").mkdir(parents=True)
    for i in range(5):
        (root / f"doc{i}.txt").write_text(make_text(i, 40 + 10 * i), encoding="utf-8")
    (root / "sub" / "deep.txt").write_text(make_text(99, 30), encoding="utf-8")
    (root / "notes.md").write_text("not a text source\n", encoding="utf-8")
    return root


@pytest.fixture
def jsonl_corpus(tmp_path):
    """A JSON-lines file of 120 small documents (some empty, which sources skip) in a 'body' field."""
    import json

    path = tmp_path / "corpus.jsonl"
    rows = [{"body": make_text(i, 1 + i % 4) if i % 11 else "", "id": i} for i in range(120)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def local_tokenizer(tmp_path):
    """A tiny byte-level BPE saved as an HF tokenizer directory (what a Qwen3 directory looks like)."""
    from transformers import PreTrainedTokenizerFast

    from hyperconn.data.tokenizers import EOS_TOKEN, train_bpe

    bpe = train_bpe(iter([make_text(i, 30) for i in range(3)]), 300, tmp_path / "raw" / "tokenizer.json")
    out = tmp_path / "tok"
    PreTrainedTokenizerFast(tokenizer_file=str(bpe.path), eos_token=EOS_TOKEN).save_pretrained(str(out))
    return out
