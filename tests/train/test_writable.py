"""A folder the run would write to that cannot be written is refused before data preparation,
with one line naming the setting; the real filesystem errors are simulated through ``os.access``
(a read-only filesystem answers EROFS there for every user, root included)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from tests.support import MICRO

from hyperconn import fileio


@pytest.fixture
def read_only(monkeypatch):
    """``read_only(folder)``: ``os.access`` answers False for writes to ``folder`` (and below)."""
    frozen: list[Path] = []
    real = os.access

    def access(path, mode, *a, **kw):
        p = Path(path).absolute()
        if mode & os.W_OK and any(p == f or f in p.parents for f in frozen):
            return False
        return real(path, mode, *a, **kw)

    monkeypatch.setattr(os, "access", access)
    return lambda folder: frozen.append(Path(folder).absolute())


def _argv(corpus, cache, out, *extra):
    sets = [f"data.source={corpus}", f"data.cache_dir={cache}", *MICRO]
    return ["train", "--preset", "demo", "--out", out, *[x for s in sets for x in ("--set", s)], *extra]


def test_an_unwritable_out_is_refused_before_data_preparation(cli, read_only, corpus, tmp_path):
    (tmp_path / "ro").mkdir()
    read_only(tmp_path / "ro")
    cache = tmp_path / "cache"
    line = cli.refused(
        _argv(corpus, cache, tmp_path / "ro" / "run"), r"run directory .*ro/run is not writable", [tmp_path]
    )
    assert "train.out_dir" in line
    assert not cache.exists()  # refused before the data was prepared


def test_an_unwritable_cache_dir_is_refused(cli, read_only, corpus, tmp_path):
    (tmp_path / "ro").mkdir()
    read_only(tmp_path / "ro")
    cli.refused(
        _argv(corpus, tmp_path / "ro" / "cache", tmp_path / "run"), r"data.cache_dir .* is not writable", [tmp_path]
    )
    assert not (tmp_path / "run").exists()


def test_an_out_under_a_file_is_refused(cli, corpus, tmp_path):
    (tmp_path / "file").write_text("x")
    cli.refused(_argv(corpus, tmp_path / "cache", tmp_path / "file" / "run"), r"is a file, not a folder", [tmp_path])


@pytest.mark.slow
def test_resume_of_a_read_only_run_is_refused(cli, read_only, corpus, tmp_path):
    argv = _argv(corpus, tmp_path / "cache", tmp_path / "run", "--set", "train.steps=4")
    assert cli.run(argv)[0] == 0
    read_only(tmp_path / "run")
    cli.refused([*argv, "--resume", "--steps", "8"], r"cannot resume: run directory .*run is not writable", [tmp_path])


def test_atomic_path_cleanup_never_hides_the_real_error(tmp_path, monkeypatch):
    real_unlink = Path.unlink

    def unlink(self, missing_ok=False):
        if fileio.is_temp_name(self.name):
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", unlink)
    with pytest.raises(RuntimeError, match="the writer failed"), fileio.atomic_path(tmp_path / "f.txt") as tmp:
        tmp.write_text("partial")
        raise RuntimeError("the writer failed")
    assert not (tmp_path / "f.txt").exists()


def test_check_writable_checks_the_nearest_existing_folder(tmp_path, read_only):
    assert fileio.check_writable(tmp_path / "a" / "b", "x") == tmp_path
    read_only(tmp_path)
    with pytest.raises(fileio.NotWritableError, match=r"x .*a/b is not writable \(.* where it would be created"):
        fileio.check_writable(tmp_path / "a" / "b", "x")
