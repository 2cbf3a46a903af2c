"""Crash-safe file publication: the one atomic writer of the package (standard library only).

Every writer follows the same protocol, so that after a crash (SIGKILL, power loss) a reader finds
either the old file or the complete new one under the real name, never a partial one:

1. write to a temporary name in the SAME folder (``os.replace`` is atomic only within one
   filesystem),
2. flush and ``os.fsync`` the data,
3. ``os.replace`` the temporary onto the real name,
4. ``os.fsync`` the folder, so the rename itself is durable.

``atomic_path`` is the general form (for writers that want a file name: ``torch.save``,
``safetensors``, ``savefig``); ``atomic_write_text`` / ``atomic_write_bytes`` / ``write_json`` are
the common cases, and ``staging_dir`` / ``publish_dir`` do the same for a whole folder. Temporary names
start with ``.`` and contain :data:`TEMP_MARK`, so :func:`is_temp_name` recognises leftovers of
a killed writer.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

TEMP_MARK = ".tmp-"


def temp_name(final: str | os.PathLike) -> Path:
    """A fresh temporary sibling of ``final``: ``.<name>.tmp-<pid>-<random>``."""
    final = Path(final)
    return final.with_name(f".{final.name}{TEMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}")


def is_temp_name(name: str) -> bool:
    """True for names made by :func:`temp_name` (leftovers of an interrupted write)."""
    return name.startswith(".") and TEMP_MARK in name


def fsync_dir(path: str | os.PathLike) -> None:
    """Make the entries of folder ``path`` (creations, renames, deletions) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on a folder; the rename is still atomic
        pass
    finally:
        os.close(fd)


def fsync_file(path: str | os.PathLike) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on a clean exit publish it as ``path``.

    Write the file at the yielded path (any writer); it is fsynced, renamed onto ``path`` and
    the folder fsynced. On an exception the temporary file is removed and ``path`` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    try:
        yield tmp
        if not tmp.is_file():
            raise FileNotFoundError(f"nothing was written to the temporary file for {path}")
        fsync_file(tmp)
        os.replace(tmp, path)
    finally:
        _remove_quietly(tmp)
    fsync_dir(path.parent)


def _remove_quietly(path: Path) -> None:
    """Delete a temporary file if it exists; a failure (EROFS, EACCES) never hides the error that
    is being raised: the leftover has a temporary name that :func:`remove_temps` cleans later."""
    with suppress(OSError):
        path.unlink(missing_ok=True)


class NotWritableError(ValueError):
    """A folder the command would write to cannot be written (read-only filesystem, permissions)."""


def check_writable(path: str | os.PathLike, what: str) -> Path:
    """Refuse (:class:`NotWritableError`, naming ``what``) a folder ``path`` that cannot be written:
    ``path`` itself when it exists, else its nearest existing ancestor (where it would be created).
    Writes nothing (``os.access``: a read-only filesystem answers EROFS for every user). Returns
    the folder that was checked."""
    path = Path(path).expanduser().absolute()
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise NotWritableError(f"{what} {path} cannot be created: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        where = "" if probe == path else f" ({probe}, where it would be created, is not)"
        raise NotWritableError(f"{what} {path} is not writable{where}: read-only filesystem or no permission")
    return probe


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and durably; return ``path``."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
    return path


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically and durably; return ``path``."""
    return atomic_write_bytes(path, text.encode(encoding))


def write_json(
    path: str | os.PathLike,
    data,
    indent: int | None = 1,
    sort_keys: bool = False,
    default: Callable | None = None,
) -> Path:
    """Write ``json.dumps(data, indent=indent, sort_keys=sort_keys, default=default) + "\n"`` to
    ``path`` atomically and durably (:func:`atomic_write_text`); return ``path``. The same data and
    arguments give the same bytes."""
    return atomic_write_text(path, json.dumps(data, indent=indent, sort_keys=sort_keys, default=default) + "\n")


def publish_dir(tmp: str | os.PathLike, final: str | os.PathLike, replace: bool = True) -> Path:
    """Rename the complete folder ``tmp`` to ``final`` durably (fsync files, folder, parent).

    ``replace=True``: an existing ``final`` is replaced: it is first renamed to a temporary name
    (atomic), the new folder renamed into place, and the old one deleted, so ``final`` is never
    missing its files except for the instant between the two renames. ``replace=False``: the first
    folder published wins: if ``final`` already holds files (a concurrent writer of the same
    content finished first), ``tmp`` is deleted and ``final`` left as it is."""
    tmp, final = Path(tmp), Path(final)
    if tmp.parent.resolve() != final.parent.resolve():
        raise ValueError(f"publish_dir: {tmp} and {final} must be in the same folder")
    for root, _, files in os.walk(tmp):
        for name in files:
            fsync_file(Path(root) / name)
        fsync_dir(root)
    if not replace:
        try:
            os.rename(tmp, final)  # fails on a non-empty ``final`` (POSIX): never replaces files
        except OSError:
            if not (final.is_dir() and any(final.iterdir())):
                raise
            shutil.rmtree(tmp, ignore_errors=True)
        fsync_dir(final.parent)
        return final
    old = None
    if final.exists():
        old = temp_name(final)
        os.replace(final, old)
    os.replace(tmp, final)
    fsync_dir(final.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return final


@contextmanager
def staging_dir(final: str | os.PathLike, replace: bool = True) -> Iterator[Path]:
    """Yield an empty temporary folder next to ``final``; on a clean exit publish it as ``final``
    (:func:`publish_dir`, ``replace`` as there); on an exception delete it and leave ``final`` as
    it was."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(final)
    tmp.mkdir()
    try:
        yield tmp
        publish_dir(tmp, final, replace=replace)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def remove_temps(folder: str | os.PathLike, prefix: str = ".") -> list[Path]:
    """Delete the leftovers of interrupted writes directly in ``folder`` whose names start with
    ``prefix`` (``.<name>`` + :data:`TEMP_MARK` for one target's); return what was removed.

    Only call this where no other process is writing them (the trainer is the single writer of its run)."""
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for entry in sorted(folder.iterdir()):
        if is_temp_name(entry.name) and entry.name.startswith(prefix):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed
