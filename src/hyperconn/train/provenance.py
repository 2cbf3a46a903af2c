"""Where a run came from: the code's commit, the installed packages, the machine (``provenance.json``).

:func:`collect` never raises: whatever it cannot find is None. The commit is that of the git
checkout holding the imported ``hyperconn`` package (or ``source_dir``): ``git rev-parse HEAD``
there; ``dirty`` is True when ``git status --porcelain --untracked-files=no`` lists a change to a
tracked file (untracked files are ignored). A package installed into a git-ignored folder of some
checkout (a virtual environment inside a repository) is not that checkout's code: commit None.

``dirty`` is None (unknown, never taken as clean) when ``git status`` fails or times out.

The run directory's ``provenance.json`` is :func:`collect` of the process that started the run,
plus ``"resumes"``: the :func:`collect` of every process that resumed it, oldest first
(:func:`record_start`, :func:`record_resume`). A run started before provenance was recorded and
resumed since has every field None except ``describe`` and ``resumes``. Each of these segments
also records ``compile``: how this code compiles the run that segment trains
(:func:`compile_mode` of the run's ``config.yaml``: ``"off"``, ``"blocks"`` or ``"whole model"``;
None where the run directory has no readable config) and ``connection``: where the run's kind comes
from (its import path and the installed distribution and version that provides it), so a run of a
kind shipped in another package says which package and version trained it.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from ..fileio import atomic_write_text

PROVENANCE = "provenance.json"
PACKAGES = ("torch", "numpy", "safetensors", "tokenizers", "datasets", "transformers", "triton", "hyperconn")
GIT_TIMEOUT_S = 10
FIELDS = ("commit", "dirty", "describe", "source", "packages", "python", "executable", "machine", "time")
UNKNOWN_START = "unknown: the run was started before provenance was recorded"


def _git(source: Path, *args: str) -> subprocess.CompletedProcess | None:
    try:
        return subprocess.run(
            ["git", "-C", str(source), *args], capture_output=True, text=True, timeout=GIT_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None


def git_state(source_dir: str | os.PathLike) -> dict:
    """``{"commit", "dirty", "describe"}`` of the checkout holding ``source_dir``; None values outside git."""
    source = Path(source_dir)
    head = _git(source, "rev-parse", "HEAD")
    if head is None or head.returncode != 0 or not source.is_dir():
        return {"commit": None, "dirty": None, "describe": None}
    ignored = _git(source, "check-ignore", "-q", ".")
    if ignored is not None and ignored.returncode == 0:  # e.g. site-packages in a git-ignored .venv
        return {"commit": None, "dirty": None, "describe": None}
    status = _git(source, "status", "--porcelain", "--untracked-files=no")
    dirty = None if status is None or status.returncode != 0 else bool(status.stdout.strip())
    described = _git(source, "describe", "--always", "--tags")
    describe = described.stdout.strip() if described is not None and described.returncode == 0 else None
    return {"commit": head.stdout.strip(), "dirty": dirty, "describe": describe}


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """``{name: installed version}``; None for a distribution that is not installed."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except (metadata.PackageNotFoundError, ValueError):
            out[name] = None
    return out


def cpu_model() -> str | None:
    """The CPU's model name from ``/proc/cpuinfo``, else ``lscpu``, else ``platform.processor()``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Hardware", "cpu model") and value.strip():
                return value.strip()
    except OSError:
        pass
    try:
        result = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=GIT_TIMEOUT_S, check=False)
        for line in result.stdout.splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "Model name" and value.strip():
                return value.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or None


def _accelerators() -> list[str]:
    try:
        import torch

        if torch.cuda.is_available():
            return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001 (provenance never fails a run)
        pass
    return []


def default_source_dir() -> Path:
    """The folder of the imported ``hyperconn`` package."""
    import hyperconn

    return Path(hyperconn.__file__).resolve().parent


def collect(source_dir: str | os.PathLike | None = None) -> dict:
    """This process's provenance (JSON-able; see the module docstring). ``source_dir``: the code
    whose commit is recorded (default: the imported ``hyperconn`` package)."""
    source = Path(source_dir) if source_dir is not None else default_source_dir()
    git = git_state(source)
    packages = package_versions()
    if git["commit"] is not None:
        describe = f"git {git['describe'] or git['commit'][:12]}" + (" (uncommitted changes)" if git["dirty"] else "")
    else:
        describe = f"hyperconn {packages.get('hyperconn') or 'unknown version'} (not a git checkout)"
    return {
        **{k: git[k] for k in ("commit", "dirty")},
        "describe": describe,
        "source": str(source),
        "packages": packages,
        "python": platform.python_version(),
        "executable": sys.executable,
        "machine": {
            "platform": platform.platform(),
            "processor": cpu_model(),
            "cpu_count": os.cpu_count(),
            "hostname": socket.gethostname(),
            "accelerators": _accelerators(),
        },
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def read_provenance(run_dir: str | os.PathLike) -> dict | None:
    """A run's ``provenance.json``; None for a run written before provenance was recorded."""
    path = Path(run_dir) / PROVENANCE
    if not path.is_file():
        return None
    return json.loads(path.read_text())


COMPILE_OFF = "off"
COMPILE_BLOCKS = "blocks"  # hyperconn.model.compile.compile_blocks: each transformer block compiled in place
COMPILE_WHOLE = "whole model"  # torch.compile of the module the loop calls


def _distributed() -> bool:
    try:
        import torch.distributed as dist

        return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    except Exception:  # noqa: BLE001 (provenance never fails a run)
        return False


def compile_mode(train_cfg, distributed: bool | None = None) -> str:
    """How this code compiles a run with these ``train`` settings (``hyperconn.train.build.compiled_forward``):
    :data:`COMPILE_OFF` without ``train.compile``; :data:`COMPILE_WHOLE` for a model that is not a
    hyperconn ``LanguageModel`` (``train.init_from``: an HF model) or one sharded by FSDP
    (``train.fsdp`` over several processes); else :data:`COMPILE_BLOCKS` (regional). ``distributed``:
    whether the run has several processes (default: this process's ``torch.distributed`` state)."""
    if not train_cfg.compile:
        return COMPILE_OFF
    distributed = _distributed() if distributed is None else distributed
    if train_cfg.init_from is not None or (train_cfg.fsdp and distributed):
        return COMPILE_WHOLE
    return COMPILE_BLOCKS


def _run_compile(run_dir: str | os.PathLike) -> str | None:
    """:func:`compile_mode` of the run's ``config.yaml``; None where it cannot be read."""
    try:
        from .config import load_config

        return compile_mode(load_config(Path(run_dir) / "config.yaml").train)
    except Exception:  # noqa: BLE001 (provenance never fails a run)
        return None


def _run_connection(run_dir: str | os.PathLike) -> dict | None:
    """Where the run's connection kind comes from (:func:`hyperconn.connections.connection_origin`:
    import path, distribution, version); None where it cannot be read."""
    try:
        from ..connections import connection_origin
        from .config import load_config

        return connection_origin(load_config(Path(run_dir) / "config.yaml").model.connection.kind)
    except Exception:  # noqa: BLE001 (provenance never fails a run)
        return None


def _run_settings(run_dir: str | os.PathLike, segment: dict) -> dict:
    """``compile`` and ``connection`` of the run as this segment trains it (unless given)."""
    return {
        "compile": segment.get("compile", _run_compile(run_dir)),
        "connection": segment.get("connection", _run_connection(run_dir)),
    }


def record_start(run_dir: str | os.PathLike, provenance: dict | None = None) -> dict:
    """Write a new run's ``provenance.json`` (atomically): ``provenance`` (default :func:`collect`)
    with the run's ``compile`` mode and ``connection`` origin, and an empty ``resumes`` list."""
    segment = provenance if provenance is not None else collect()
    record = {**segment, **_run_settings(run_dir, segment), "resumes": []}
    atomic_write_text(Path(run_dir) / PROVENANCE, json.dumps(record, indent=1) + "\n")
    return record


def record_resume(run_dir: str | os.PathLike, provenance: dict | None = None) -> dict:
    """Append ``provenance`` (default :func:`collect`) with the run's ``compile`` mode now to the
    run's ``resumes`` list (atomically); a run without the file gets one whose start is unknown."""
    record = read_provenance(run_dir)
    if record is None:
        record = {key: None for key in (*FIELDS, "compile")}
        record["describe"] = UNKNOWN_START
    segment = provenance if provenance is not None else collect()
    record.setdefault("resumes", []).append({**segment, **_run_settings(run_dir, segment)})
    atomic_write_text(Path(run_dir) / PROVENANCE, json.dumps(record, indent=1) + "\n")
    return record
