"""Checkpoints: ``checkpoints/step_<k>/`` with the weights as safetensors and the trainer state
(optimizer, RNG, step; the data position IS the step) as a torch file.

Each checkpoint directory is written under a temporary name and renamed into place
(``os.replace``), so a crash never leaves a half-written checkpoint under a real name. Loading
checks that the two files agree on the step and that every tensor matches the model, and refuses
anything else with a ``ValueError``.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

FORMAT = 1
WEIGHTS = "model.safetensors"
STATE = "trainer.pt"


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = checkpoint_dir(run_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("step_") and p.name[5:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[5:]))


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


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
    run_dir: Path, step: int, model_state: dict, optimizer_state: dict, extra: dict | None = None, keep: int = 2
) -> Path:
    """Write ``checkpoints/step_<step>`` atomically; keep the newest ``keep`` checkpoints."""
    root = checkpoint_dir(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:08d}"
    tmp = root / f".tmp_step_{step:08d}_{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    save_file(_dedupe(model_state), str(tmp / WEIGHTS), metadata={"step": str(step), "format": str(FORMAT)})
    state = {"format": FORMAT, "step": step, "optimizer": optimizer_state, "rng": rng_state(), **(extra or {})}
    torch.save(state, tmp / STATE)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """``(weights, trainer_state)``; ValueError if missing pieces, unreadable or inconsistent."""
    path = Path(path)
    weights_file, state_file = path / WEIGHTS, path / STATE
    for f in (weights_file, state_file):
        if not f.is_file():
            raise ValueError(f"checkpoint {path} is incomplete: {f.name} is missing")
    try:
        weights = load_file(str(weights_file))
        with safe_open(str(weights_file), framework="pt") as sf:  # metadata: the step of the weights
            meta = sf.metadata() or {}
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"checkpoint {path} is corrupt: cannot read {WEIGHTS} ({err})") from err
    try:
        state = torch.load(state_file, map_location="cpu", weights_only=False)
    except Exception as err:  # unpickling errors come in many types
        raise ValueError(f"checkpoint {path} is corrupt: cannot read {STATE} ({err})") from err
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"checkpoint {path}: {STATE} is not a format-{FORMAT} trainer state")
    if meta.get("step") != str(state.get("step")):
        raise ValueError(
            f"checkpoint {path} is inconsistent: weights are from step {meta.get('step')}, "
            f"trainer state from step {state.get('step')}"
        )
    return weights, state


def load_weights(model: nn.Module, weights: dict[str, torch.Tensor], source: Path | str = "checkpoint") -> None:
    """Copy ``weights`` into ``model``; ValueError naming the mismatch if they do not fit it."""
    expected = model.state_dict()
    weights = dict(weights)
    for name, t in expected.items():  # restore the names of shared (tied) tensors
        if name not in weights:
            for other, u in expected.items():
                if other in weights and u is not t and u.untyped_storage().data_ptr() == t.untyped_storage().data_ptr():
                    weights[name] = weights[other]
                    break
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
    model.load_state_dict(weights, strict=True)
