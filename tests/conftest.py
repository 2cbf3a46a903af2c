import os

# Triton decides between compiling and interpreting when a kernel is decorated, and torch._dynamo
# (imported by transformers, torch.compile...) imports Triton: so the interpreter switch for
# tests/kernels is set here, before anything else is imported. It affects nothing else on the CPU
# (Inductor's CPU backend does not use Triton; the connections never launch kernels for CPU
# tensors unless a test asks for backend="triton").
os.environ["TRITON_INTERPRET"] = "1"

import pytest
import torch

# torch.manual_seed also queues the seed for every accelerator not yet initialised (CUDA, XPU,
# MTIA), formatting the whole call stack for each: ~0.7 ms a call under pytest's ~60 frames, a
# second over the fast tests. Without an accelerator only the CPU generator draws: seeding it alone
# gives the same state.
_ACCELERATOR = torch.accelerator.is_available()


@pytest.fixture(autouse=True)
def _seed_and_fresh_dynamo():
    """Every test starts from the same RNG state and an empty torch.compile cache."""
    if _ACCELERATOR:
        torch.manual_seed(0)
    else:
        torch.default_generator.manual_seed(0)
    yield
    torch._dynamo.reset()


@pytest.fixture(autouse=True)
def _one_thread():
    """Every test runs with one torch intra-op thread, restored after it (a training run's
    ``train.threads`` would otherwise carry over to the tests after it). The tests' tensors are
    tiny: on a 2-core CPU shared with other jobs, two threads spin-waiting on each other made a
    4x4 ``log_softmax`` ~50x slower than one thread (183 us against 3.4 us; tests/hf measured ~300x
    on a width-32 model's forward). Tests that start their own processes set their own threads."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _tree(root):
    """``{relative path: (size, mtime_ns)}`` of every file under ``root`` (a snapshot to compare)."""
    from pathlib import Path

    root = Path(root)
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


class CliRunner:
    """Runs ``hyperconn`` in-process and checks a refusal: exit code 2, one stderr line
    ``hyperconn CMD: error: ...`` matching a pattern, and no file created or changed under ``watch``."""

    def __init__(self, capsys):
        self.capsys = capsys

    def run(self, argv):
        from hyperconn.cli import main

        self.capsys.readouterr()
        rc = main([str(a) for a in argv])
        captured = self.capsys.readouterr()
        return rc, captured.out, captured.err

    def refused(self, argv, match, watch=()):
        import re

        before = {str(w): _tree(w) for w in watch}
        rc, out, err = self.run(argv)
        lines = err.strip().splitlines()
        assert rc == 2, (rc, out, err)
        assert len(lines) == 1, err
        assert lines[0].startswith(f"hyperconn {argv[0]}: error: "), err
        assert re.search(match, lines[0]), (match, err)
        for w in watch:
            assert _tree(w) == before[str(w)], f"{w} changed"
        return lines[0]


@pytest.fixture
def cli(capsys):
    """:class:`CliRunner`: ``cli.run(argv) -> (rc, out, err)``, ``cli.refused(argv, match, watch)``."""
    return CliRunner(capsys)


@pytest.fixture
def micro_args(tmp_path):
    """``--set`` arguments for a microscopic ``hyperconn train``: :func:`tests.support.micro_settings`
    without ``train.steps`` (the tests pass ``--steps``), on a generated ~18 KB corpus of four words
    in ``tmp_path`` with its cache in ``tmp_path / "cache"``."""
    import random

    from tests.support import micro_settings, set_args

    rng = random.Random(0)
    text = "\n".join(" ".join(rng.choice(["to", "be", "or", "not"]) for _ in range(8)) for _ in range(600))
    (tmp_path / "corpus.txt").write_text(text)
    data = [f"data.source={tmp_path / 'corpus.txt'}", f"data.cache_dir={tmp_path / 'cache'}"]
    return set_args([*data, *micro_settings(without=("train.steps",))])
