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
