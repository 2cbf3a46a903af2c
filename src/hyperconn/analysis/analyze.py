"""``analyze_run``: a trained run's connections, measured on its validation batches.

Loads the run through the trainer's public ``load_run``, prepares the run's data with
``hyperconn.data``, runs ``batches`` batches of validation windows spread evenly over the split
(``hyperconn.data.batching.spread_batches``) through the model while
:func:`~hyperconn.analysis.capture.capture_statistics` reads every connection's mixing matrices, and
writes ``analysis.json``, ``analysis.md`` and the plots into the run directory (or ``out``).
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..diagnostics import hyper_connections
from .capture import capture_statistics

DEFAULT_BATCHES = 8


def connection_parameters(model: torch.nn.Module) -> int:
    """Learnable parameters inside the model's hyper-connection modules."""
    return sum(p.numel() for _, conn in hyper_connections(model) for p in conn.parameters())


def analyze_run(run_dir: str | Path, batches: int = DEFAULT_BATCHES, out: str | Path | None = None) -> dict:
    """Analyse the run in ``run_dir``; returns the data written to ``analysis.json``."""
    # data, train and the numpy-based report are extras: imported when a run is analysed, so that
    # registering the `hyperconn analyze` command needs torch alone
    from ..data import prepare_data
    from ..data.batching import spread_batches
    from ..train import load_run
    from .report import write_analysis

    run_dir = Path(run_dir)
    if not isinstance(batches, int) or batches < 1:
        raise ValueError(f"batches must be an integer >= 1, got {batches!r}")
    if not run_dir.is_dir():
        raise FileNotFoundError(f"no run directory at {run_dir}")
    model, cfg, _tokenizer = load_run(run_dir)
    model = model.to("cpu", torch.float32)
    data = prepare_data(cfg.data)
    seq_len = cfg.train.seq_len
    batch_size = cfg.train.batch_size
    result = capture_statistics(model, spread_batches(data.val, seq_len, batch_size, batches * batch_size))
    conn = cfg.model.connection
    info = {
        "run": str(run_dir),
        "preset": cfg.preset,
        "connection": conn.kind,
        "num_streams": conn.num_streams,
        "seed": cfg.train.seed,
        "validation batches": batches,
        "tokens per connection": result.layers[0].tokens,
        "parameters (total)": sum(p.numel() for p in model.parameters()),
        "parameters (connections)": connection_parameters(model),
        # the resolved data settings and split, as the token cache recorded them
        "data source": data.info.get("source", cfg.data.source),
        "tokenizer": data.info.get("tokenizer", cfg.data.tokenizer),
        "val_fraction": cfg.data.val_fraction,
        **{f"{split} {what}": data.info.get(f"{split}_{what}") for split in ("train", "val")
           for what in ("documents", "bytes", "tokens")},
    }
    title = f"{conn.kind} (n={conn.num_streams}, seed {cfg.train.seed})"
    return write_analysis(result, Path(out) if out is not None else run_dir, title, info)
