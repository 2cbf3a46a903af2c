"""Run logging: ``metrics.csv`` (one row per logged step or eval), ``steps.csv`` (one row per
optimiser step) and TensorBoard events.

``val_tokens`` of an eval row is the number of targets the evaluation scored (the final one covers
the whole validation split). ``steps.csv`` has the training loss and the gradient norm (before
clipping) of every step, whatever ``log_interval`` is; on resume it is cut back to the checkpoint
like ``metrics.csv``, so it always holds each step once.

Only the writer process (rank 0) creates a :class:`MetricsLog`; the columns are fixed so every
run's CSV reads the same way (empty cells where a row does not carry a value).
"""

from __future__ import annotations

import csv
import io
import math
import resource
from pathlib import Path

import torch

from .._optional import require
from ..fileio import atomic_write_text

COLUMNS = (
    "step",
    "tokens",
    "loss",
    "lr",
    "grad_norm",
    "tokens_per_s",
    "peak_mem_mb",
    "elapsed_s",
    "val_loss",
    "val_bpb",
    "val_tokens",
)
STEP_COLUMNS = ("step", "loss", "grad_norm", "lr")
STEPS = "steps.csv"
HRES_COLUMNS = ("step", "connection", "identity_distance", "negative_fraction", "spectral_norm")


def peak_memory_mb(device: torch.device) -> float:
    """CUDA: peak allocated by tensors; CPU: the process's peak resident set size."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


class MetricsLog:
    def __init__(self, run_dir: Path, resume_step: int | None = None) -> None:
        """``resume_step``: keep the rows up to this step (a resumed run rewrites the later ones;
        ``-1`` keeps none); None starts new files."""
        SummaryWriter = require("torch.utils.tensorboard", "hyperconn train").SummaryWriter

        self._file, self._csv = _open_csv(Path(run_dir) / "metrics.csv", COLUMNS, resume_step)
        self._hres_file, self._hres = _open_csv(Path(run_dir) / "h_res.csv", HRES_COLUMNS, resume_step)
        self._steps_file, self._steps = _open_csv(Path(run_dir) / STEPS, STEP_COLUMNS, resume_step)
        purge = None if resume_step is None else max(resume_step + 1, 0)
        self.tb = SummaryWriter(str(Path(run_dir) / "tensorboard"), purge_step=purge)

    def log(self, row: dict) -> None:
        unknown = set(row) - set(COLUMNS)
        if unknown:
            raise ValueError(f"unknown metrics column(s): {sorted(unknown)}")
        self._csv.writerow(row)
        self._file.flush()
        step = row["step"]
        for key, value in row.items():
            if key != "step" and value is not None:
                self.tb.add_scalar(("val/" if key.startswith("val_") else "train/") + key, value, step)

    def log_step(self, step: int, loss: float, grad_norm: float, lr: float) -> None:
        """One optimiser step's row of ``steps.csv``."""
        self._steps.writerow({"step": step, "loss": loss, "grad_norm": grad_norm, "lr": lr})
        self._steps_file.flush()

    def log_hres(self, step: int, summaries: dict[str, dict[str, float]]) -> None:
        """Per-connection ``H_res`` summaries (``h_res.csv`` and TensorBoard ``h_res/<metric>/<conn>``)."""
        for label, values in summaries.items():
            self._hres.writerow({"step": step, "connection": label, **values})
            for key, value in values.items():
                self.tb.add_scalar(f"h_res/{key}/{label}", value, step)
        self._hres_file.flush()

    def close(self) -> None:
        self._file.close()
        self._hres_file.close()
        self._steps_file.close()
        self.tb.close()


def _open_csv(path: Path, columns: tuple[str, ...], resume_step: int | None):
    """A CSV opened for appending; on resume, rows from after the checkpoint are dropped first
    (the resumed run writes them again)."""
    rows = []
    if resume_step is not None and path.is_file():
        text = path.read_text()
        if not text.endswith("\n"):  # a kill mid-row leaves a partial last line: drop it
            text = text[: text.rfind("\n") + 1]
        rows = [r for r in csv.DictReader(io.StringIO(text, newline="")) if _step(r) <= resume_step]
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, columns)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())
    handle = open(path, "a", newline="")  # noqa: SIM115 (kept open for the run)
    return handle, csv.DictWriter(handle, columns)


def _step(row: dict) -> float:
    try:
        return int(row["step"])
    except (TypeError, ValueError):
        return math.inf  # an unreadable row is dropped


def read_metrics(run_dir: Path, name: str = "metrics.csv") -> list[dict]:
    """A run's CSV as dicts: ``step`` int, numbers float, empty cells None, text kept."""
    with open(Path(run_dir) / name, newline="") as f:
        rows = list(csv.DictReader(f))
    return [{k: _cell(k, v) for k, v in r.items()} for r in rows]


def _cell(key: str, value: str):
    if value == "":
        return None
    if key == "step":
        return int(value)
    try:
        return float(value)
    except ValueError:
        return value
