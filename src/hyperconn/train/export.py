"""``hyperconn export RUN --out DIR``: the newest valid checkpoint of a run, in either format,
consolidated into one folder that needs no process group and no hyperconn trainer state:

    DIR/model.safetensors   every weight, full, keyed as the plain model's ``state_dict()``
                            (a tied head stored once, as in the full checkpoint format); its
                            metadata names the step and the checkpoint it came from
    DIR/config.yaml         the run's config (``hyperconn.train.load_config`` reads it)
    DIR/hf/                 for a run started from a Hugging Face checkpoint (``train.init_from``):
                            the converted model's ``save_pretrained`` folder
                            (``hyperconn.hf.load`` reloads it)

``DIR`` is written beside its final name and renamed into place, so a kill leaves no half folder;
an existing non-empty ``DIR`` is refused (one line, exit 2, nothing written).
"""

from __future__ import annotations

import sys
from pathlib import Path

from .._optional import require
from ..fileio import staging_dir
from .checkpoint import WEIGHTS, _dedupe, list_checkpoints, read_weights
from .rundir import CONFIG
from .sharded_checkpoint import consolidate, is_sharded, read_sharded


def newest_weights(run_dir: Path, say=None) -> tuple[dict, Path]:
    """``(full weights, checkpoint)`` of the newest checkpoint that reads, either format; each newer
    one that does not is named through ``say``; ValueError when none reads."""
    found = list_checkpoints(run_dir)
    if not found:
        raise FileNotFoundError(f"{run_dir} has no checkpoint to export")
    reasons = []
    for path in reversed(found):
        try:
            if is_sharded(path):
                read_sharded(path)
                return consolidate(path), path
            return read_weights(path)[0], path
        except ValueError as err:
            reasons.append(str(err))
            if say is not None:
                say(f"export: skipped checkpoint {path.name}: {err}")
    raise ValueError(f"{run_dir}: none of its {len(found)} checkpoint(s) reads (newest: {reasons[0]})")


def export_run(run_dir: Path, out: Path, say=None) -> Path:
    """Write ``out`` (module doc) from ``run_dir``'s newest valid checkpoint; return ``out``."""
    from .checkpoint import step_of
    from .config import load_config
    from .runs import check_run_dir

    run_dir, out = Path(run_dir), Path(out)
    check_run_dir(run_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"--out {out} already exists and is not empty: choose a new folder")
    cfg = load_config(run_dir / CONFIG)
    weights, ckpt = newest_weights(run_dir, say)
    save_file = require("safetensors.torch", "hyperconn export").save_file
    hf_model = _hf_model(cfg, weights) if cfg.train.init_from is not None else None
    with staging_dir(out, replace=False) as tmp:
        fmt = "sharded" if is_sharded(ckpt) else "full"
        meta = {"step": str(step_of(ckpt)), "checkpoint": str(ckpt), "format": fmt}
        save_file(_dedupe(weights), str(tmp / WEIGHTS), metadata=meta)
        (tmp / CONFIG).write_text((run_dir / CONFIG).read_text())
        if hf_model is not None:
            hf_model.hf.save_pretrained(str(tmp / "hf"))
    return out


def _hf_model(cfg, weights: dict):
    from .build import build_from_hf
    from .checkpoint import load_weights

    model = build_from_hf(cfg, pretrained=False)
    load_weights(model, weights, "the exported checkpoint")
    return model


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "export",
        help="consolidate a run's newest checkpoint (full or sharded) into one safetensors file",
        description="Consolidate the newest valid checkpoint of RUN (full or sharded format, any layout) into "
        "DIR/model.safetensors + DIR/config.yaml (and DIR/hf/, a save_pretrained folder, for a run started "
        "from a Hugging Face checkpoint). Runs in one process.",
    )
    p.add_argument("run", help="run directory")
    p.add_argument("--out", required=True, help="the folder to write (must not exist, or be empty)")
    p.set_defaults(func=_export)


def _export(args) -> int:
    out = export_run(Path(args.run), Path(args.out), say=lambda line: print(line, file=sys.stderr))
    print(f"exported {args.run} -> {out / WEIGHTS}")
    return 0
