"""Checkpoints: ``checkpoints/step_<k>/`` = ``model.safetensors`` (the weights) + ``trainer.pt``
(optimizer state, RNG states, step and the resolved precision; the data position IS the step).

Writing: both files go into a temporary folder next to the real one, are fsynced, and the folder
is renamed into place (``hyperconn.fileio.staging_dir``), so a kill at any instant leaves either no
``step_<k>`` or a complete one; what a kill can leave is a temporary folder, which
:func:`remove_stale` deletes on the next start.

Reading never runs pickle code: ``trainer.pt`` holds only tensors, numbers, strings, lists and
dicts and is read with ``torch.load(weights_only=True)``; the weights are safetensors. A
checkpoint is *valid* when both files are present and readable, agree on the step, and (checked
by the caller) fit the model. :func:`newest_valid` walks the checkpoints newest first and says
why it skipped each invalid one.

Format 1 (before this layout) pickled NumPy's RNG state; its weights still load
(:func:`read_weights`, for evaluating and analysing old runs), its trainer state is refused.
"""

from __future__ import annotations

import random
import shutil
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from .._optional import require
from ..fileio import remove_temps, staging_dir

FORMAT = 2
WEIGHTS = "model.safetensors"
STATE = "trainer.pt"


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def step_of(path: Path) -> int:
    return int(Path(path).name[len("step_") :])


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Published checkpoint folders, oldest first (validity is not checked here)."""
    root = checkpoint_dir(run_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("step_") and p.name[5:].isdigit()]
    return sorted(found, key=step_of)


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def remove_stale(run_dir: Path) -> list[Path]:
    """Delete temporary checkpoint folders left by a killed writer; return them."""
    return remove_temps(checkpoint_dir(run_dir))


# --- RNG states as plain tensors / numbers (loadable with weights_only=True) ----------------------


def rng_state() -> dict:
    np = require("numpy", "hyperconn train")
    kind, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    version, python_state, gauss_next = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "python": {"version": version, "state": list(python_state), "gauss_next": gauss_next},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    np = require("numpy", "hyperconn train")
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


# --- write ----------------------------------------------------------------------------------------


def _dedupe(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop later names of shared storage (a tied head): safetensors stores each tensor once."""
    seen: set[int] = set()
    out = {}
    for name, t in tensors.items():
        key = t.untyped_storage().data_ptr()
        if key in seen and t.numel():
            continue
        seen.add(key)
        out[name] = t.detach().contiguous().cpu()
    return out


def save_checkpoint(
    run_dir: Path, step: int, model_state: dict, optimizer_state: dict, meta: dict | None = None, keep: int = 2
) -> Path:
    """Publish ``checkpoints/step_<step>`` atomically and durably; keep the newest ``keep``.

    ``meta``: extra JSON-like entries for ``trainer.pt`` (numbers, strings, lists, dicts)."""
    save_file = require("safetensors.torch", "hyperconn train").save_file
    root = checkpoint_dir(run_dir)
    final = root / f"step_{step:08d}"
    state = {**(meta or {}), "format": FORMAT, "step": step, "optimizer": optimizer_state, "rng": rng_state()}
    with staging_dir(final) as tmp:
        save_file(_dedupe(model_state), str(tmp / WEIGHTS), metadata={"step": str(step), "format": str(FORMAT)})
        torch.save(state, tmp / STATE)
    for old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


# --- read -----------------------------------------------------------------------------------------


def read_weights(path: Path) -> tuple[dict[str, torch.Tensor], int]:
    """``(weights, step)`` from ``model.safetensors`` alone (any format); ValueError if unreadable."""
    st = require("safetensors", "hyperconn train")
    load_file = require("safetensors.torch", "hyperconn train").load_file
    path = Path(path)
    weights_file = path / WEIGHTS
    if not weights_file.is_file():
        raise ValueError(f"checkpoint {path} is incomplete: {WEIGHTS} is missing")
    try:
        weights = load_file(str(weights_file))
        with st.safe_open(str(weights_file), framework="pt") as sf:  # metadata: the step of the weights
            meta = sf.metadata() or {}
    except (st.SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise ValueError(f"checkpoint {path} is corrupt: cannot read {WEIGHTS} ({err})") from err
    try:
        step = int(meta.get("step", ""))
    except ValueError as err:
        raise ValueError(f"checkpoint {path}: {WEIGHTS} carries no step in its metadata") from err
    return weights, step


def read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """``(weights, trainer_state)``; ValueError if a file is missing, unreadable or they disagree."""
    path = Path(path)
    weights, weights_step = read_weights(path)
    state_file = path / STATE
    if not state_file.is_file():
        raise ValueError(f"checkpoint {path} is incomplete: {STATE} is missing")
    try:
        state = torch.load(state_file, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, bad magic, a pickle global outside the allow-list, ...
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(
            f"checkpoint {path} is corrupt or from an older hyperconn: cannot read {STATE} as plain tensors ({reason})"
        ) from err
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise ValueError(
            f"checkpoint {path}: {STATE} is format {found}, this hyperconn resumes format {FORMAT} only "
            "(weights of older runs still load for eval/analysis; start a new run to continue training)"
        )
    if weights_step != state.get("step") or step_of(path) != weights_step:
        raise ValueError(
            f"checkpoint {path} is inconsistent: folder says step {step_of(path)}, weights are from step "
            f"{weights_step}, trainer state from step {state.get('step')}"
        )
    for key in ("optimizer", "rng"):
        if not isinstance(state.get(key), dict):
            raise ValueError(f"checkpoint {path}: {STATE} has no {key} state")
    return weights, state


def newest_valid(
    run_dir: Path, check: Callable[[dict, dict], None] | None = None
) -> tuple[Path | None, dict | None, dict | None, list[tuple[Path, str]]]:
    """The newest checkpoint that reads and passes ``check(weights, state)`` (which raises
    ValueError to reject one): ``(path, weights, state, skipped)``, ``skipped`` = the newer
    invalid ones with the reason each was rejected. ``path`` is None when none is valid."""
    skipped: list[tuple[Path, str]] = []
    for path in reversed(list_checkpoints(run_dir)):
        try:
            weights, state = read_checkpoint(path)
            if check is not None:
                check(weights, state)
        except ValueError as err:
            skipped.append((path, str(err)))
            continue
        return path, weights, state, skipped
    return None, None, None, skipped


def _with_tied_names(model: nn.Module, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Restore the names of shared (tied) tensors that safetensors stored once."""
    expected = model.state_dict()
    weights = dict(weights)
    for name, t in expected.items():
        if name not in weights:
            for other, u in expected.items():
                if other in weights and u is not t and u.untyped_storage().data_ptr() == t.untyped_storage().data_ptr():
                    weights[name] = weights[other]
                    break
    return weights


def check_weights(model: nn.Module, weights: dict[str, torch.Tensor], source: Path | str = "checkpoint") -> dict:
    """``weights`` with tied names restored; ValueError naming the mismatch if they do not fit ``model``."""
    expected = model.state_dict()
    weights = _with_tied_names(model, weights)
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    wrong = sorted(n for n in set(expected) & set(weights) if tuple(expected[n].shape) != tuple(weights[n].shape))
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:5])}")
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected[:5])}")
        if wrong:
            n = wrong[0]
            parts.append(f"shape of {n} is {tuple(weights[n].shape)}, the model has {tuple(expected[n].shape)}")
        raise ValueError(f"{source} does not match the model config: {'; '.join(parts)}")
    return weights


def load_weights(model: nn.Module, weights: dict[str, torch.Tensor], source: Path | str = "checkpoint") -> None:
    """Copy ``weights`` into a plain (unsharded) ``model``; ValueError naming any mismatch."""
    model.load_state_dict(check_weights(model, weights, source), strict=True)
