"""A microscopic model on a small generated corpus: each run takes about a second."""

from __future__ import annotations

import random

import pytest
from tests.support import MICRO

from hyperconn.train import build_config


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    """A text file of ~30 KB with learnable structure (a small vocabulary of words)."""
    rng = random.Random(0)
    words = ["the", "king", "queen", "shall", "speak", "to", "thee", "and", "my", "lord", "is", "good"]
    lines = [" ".join(rng.choice(words) for _ in range(rng.randint(4, 10))) + "." for _ in range(1200)]
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("\n".join(lines))
    return path


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def make_cfg(corpus, cache_dir, tmp_path):
    """``make_cfg(*overrides, name="run", **flags)`` -> a validated micro TrainConfig in tmp_path."""

    def make(*overrides, name: str = "run", **flags):
        base = [f"data.source={corpus}", f"data.cache_dir={cache_dir}"]
        flags.setdefault("out", str(tmp_path / name))
        return build_config("demo", overrides=[*base, *MICRO, *overrides], **flags)

    return make
