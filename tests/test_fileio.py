"""The atomic writer: all-or-nothing publication, fsync before the rename, crash leftovers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from hyperconn import fileio
from hyperconn.fileio import (
    atomic_path,
    atomic_write_bytes,
    atomic_write_text,
    is_temp_name,
    publish_dir,
    remove_temps,
    staging_dir,
)


def test_text_and_bytes_round_trip_and_leave_no_temp(tmp_path):
    p = atomic_write_text(tmp_path / "sub" / "a.txt", "héllo\n")
    assert p.read_text(encoding="utf-8") == "héllo\n"
    atomic_write_bytes(p, b"\x00\x01")
    assert p.read_bytes() == b"\x00\x01"
    assert sorted(x.name for x in p.parent.iterdir()) == ["a.txt"]


def test_a_failing_writer_leaves_the_old_file_byte_identical(tmp_path):
    p = tmp_path / "a.txt"
    p.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="boom"), atomic_path(p) as tmp:
        tmp.write_bytes(b"half of the new")
        raise RuntimeError("boom")
    assert p.read_bytes() == b"old"
    assert [x.name for x in tmp_path.iterdir()] == ["a.txt"]
    with pytest.raises(FileNotFoundError, match="nothing was written"), atomic_path(p):
        pass  # a writer that wrote nothing must not publish an empty file
    assert p.read_bytes() == b"old"


def test_data_is_fsynced_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(a, b):
        events.append(("replace", str(b)))
        real_replace(a, b)

    monkeypatch.setattr(fileio.os, "fsync", fsync)
    monkeypatch.setattr(fileio.os, "replace", replace)
    target = tmp_path / "x.bin"
    atomic_write_bytes(target, b"data")
    kinds = [e[0] for e in events]
    assert kinds == ["fsync", "replace", "fsync"]
    assert is_temp_name(os.path.basename(events[0][1]))  # the temp file's data, before the rename
    assert events[2][1] == str(tmp_path)  # then the folder holding the new name


def test_publish_dir_replaces_an_existing_folder_whole(tmp_path):
    final = tmp_path / "ck"
    final.mkdir()
    (final / "old.txt").write_text("old")
    with staging_dir(final) as tmp:
        (tmp / "new.txt").write_text("new")
        (tmp / "nested").mkdir()
        (tmp / "nested" / "n.txt").write_text("n")
    assert sorted(p.name for p in final.iterdir()) == ["nested", "new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["ck"]  # the old folder and the temp are gone
    with pytest.raises(ValueError, match="same folder"):
        publish_dir(tmp_path / "ck", tmp_path / "other" / "ck")


def test_a_failing_staging_dir_publishes_nothing(tmp_path):
    final = tmp_path / "ck"
    with pytest.raises(KeyboardInterrupt), staging_dir(final) as tmp:
        (tmp / "part.txt").write_text("part")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_a_writer_killed_mid_write_leaves_the_old_file_and_a_removable_temp(tmp_path):
    target = tmp_path / "big.bin"
    target.write_bytes(b"old")
    child = textwrap.dedent(
        f"""
        import os, signal
        from hyperconn.fileio import atomic_path
        with atomic_path({str(target)!r}) as tmp:
            with open(tmp, "wb") as f:
                f.write(b"x" * 100000)
                f.flush()
                os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", child], capture_output=True)
    assert proc.returncode == -signal.SIGKILL
    assert target.read_bytes() == b"old"
    leftovers = [p for p in tmp_path.iterdir() if p != target]
    assert len(leftovers) == 1 and is_temp_name(leftovers[0].name)
    (tmp_path / ".keep").write_text("not ours")  # a dotfile that is not a temp stays
    assert remove_temps(tmp_path, prefix=".other.bin") == []  # another target's leftovers only
    assert remove_temps(tmp_path, prefix=".big.bin") == leftovers
    assert sorted(p.name for p in tmp_path.iterdir()) == [".keep", "big.bin"]


def test_write_json_is_the_dumps_text_published_atomically(tmp_path):
    data = {"b": [1, 2.5], "a": {"z": None, "y": "é"}}
    p = fileio.write_json(tmp_path / "sub" / "x.json", data)
    assert p.read_text(encoding="utf-8") == json.dumps(data, indent=1) + "\n"
    fileio.write_json(p, data, indent=None, sort_keys=True)
    assert p.read_bytes() == (json.dumps(data, sort_keys=True) + "\n").encode()
    fileio.write_json(p, {"path": tmp_path}, default=str)  # ``default`` for values json cannot write
    assert json.loads(p.read_text()) == {"path": str(tmp_path)}
    assert [x.name for x in p.parent.iterdir()] == ["x.json"]  # no temporary left
    with pytest.raises(TypeError):
        fileio.write_json(p, {"path": tmp_path})
    assert json.loads(p.read_text()) == {"path": str(tmp_path)}  # the failed write left the old file


def test_staging_dir_without_replace_keeps_the_first_published_folder(tmp_path):
    final = tmp_path / "tokens"
    with staging_dir(final, replace=False) as first, staging_dir(final, replace=False) as second:
        (second / "meta.json").write_text("second")
        (first / "meta.json").write_text("first")
    # the inner (second) context exits first and publishes; the first writer's folder is dropped
    assert (final / "meta.json").read_text() == "second"
    assert [p.name for p in tmp_path.iterdir()] == ["tokens"]
    with staging_dir(final) as third:  # the default replaces
        (third / "meta.json").write_text("third")
    assert (final / "meta.json").read_text() == "third"
