import os

# Triton decides between compiling and interpreting when a kernel is decorated, and torch._dynamo
# (imported by transformers, torch.compile...) imports Triton: so the interpreter switch for
# tests/kernels is set here, before anything else is imported. It affects nothing else on the CPU
# (Inductor's CPU backend does not use Triton; the connections never launch kernels for CPU
# tensors unless a test asks for backend="triton").
os.environ["TRITON_INTERPRET"] = "1"

import pytest
import torch

# Slow tests in modules that do not mark themselves (``pytest.mark.slow`` in a module is the usual
# way; see docs/development.md). Each entry is a node-id prefix: a file marks all of its tests, a
# ``file::test`` every parametrisation. Chosen from a ``--durations`` run: each takes over about a
# second on a 2-core CPU (a training run, a subprocess, or torch.compile).
SLOW_ELSEWHERE = (
    "tests/data/test_pycode.py::test_a_few_training_steps",  # trains on the code corpus
    "tests/data/test_shards.py::test_killed_prepare_then_rerun_gives_identical_shards",  # subprocesses
    "tests/data/test_shards.py::test_two_workers_write_the_same_shards_as_one",
    "tests/data/test_paper_config.py::test_paper_config_names_a_local_tokenizer_and_shards",
    "tests/train/test_distributed.py",  # every test shares a two-process launch
    "tests/train/test_checkpoint.py::test_a_corrupt_newest_checkpoint_is_skipped_and_the_run_still_matches",
    "tests/train/test_checkpoint.py::test_a_trainer_state_with_pickle_code_is_refused_without_running_it",
    "tests/train/test_checkpoint.py::test_stale_temporary_checkpoints_are_removed_on_resume",
    "tests/connections/test_reference.py::test_shc_float64_gradcheck",
)


def pytest_collection_modifyitems(config, items):
    """Adds the ``slow`` marker to the tests named by :data:`SLOW_ELSEWHERE`."""
    for item in items:
        if item.nodeid.startswith(SLOW_ELSEWHERE):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _seed_and_fresh_dynamo():
    """Every test starts from the same RNG state and an empty torch.compile cache."""
    torch.manual_seed(0)
    yield
    torch._dynamo.reset()


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
