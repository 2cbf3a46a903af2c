"""Shared by the block-level A/B scripts (``fused_streams.py``, ``sinkhorn_ab.py``): one
transformer Block at a preset's shape, and a source file of this repository as it was at a git
revision (the ``old`` contender), loaded as a fresh module."""

from __future__ import annotations

import copy
import os
import subprocess
import types

import torch

from hyperconn.fileio import write_json
from hyperconn.model.config import ConnectionConfig
from hyperconn.model.layers import RotaryEmbedding
from hyperconn.model.presets import get_preset
from hyperconn.model.transformer import Block


def load_module_at(rev: str, path: str) -> types.ModuleType:
    """``path`` (a file importing only torch and the standard library) at git revision ``rev``."""
    source = subprocess.run(["git", "show", f"{rev}:{path}"], check=True, capture_output=True, text=True).stdout
    module = types.ModuleType(f"{path.rsplit('/', 1)[-1].removesuffix('.py')}_{rev}")
    exec(compile(source, f"{rev}:{path}", "exec"), module.__dict__)  # noqa: S102 (a file of this repository)
    return module


def build_block(preset: str, kind: str, num_streams: int, batch: int, seq_len: int | None = None):
    """``(block, rope, x)``: a seeded Block of ``preset`` with its connections moved off their
    initial values (so every coefficient gradient is nonzero), and streams ``x`` of shape
    ``(batch, seq_len or max_seq_len, num_streams, dim)`` that need a gradient."""
    cfg = copy.deepcopy(get_preset(preset).model)
    cfg.connection = ConnectionConfig(kind=kind, num_streams=num_streams)
    torch.manual_seed(0)
    block = Block(cfg, 1)
    with torch.no_grad():
        for conn in (block.attn_conn, block.mlp_conn):
            for q in conn.parameters():
                q.add_(0.05 * torch.randn_like(q))
    rope = RotaryEmbedding(cfg.head_dim, cfg.max_seq_len, cfg.rope_base)
    shape = (batch, seq_len or cfg.max_seq_len, num_streams, cfg.dim)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(2))
    return block, rope, x.requires_grad_()


def finish(rows: list[dict], path: str | None) -> None:
    """Print the load average after the run and write ``rows`` as JSON to ``path`` (if given)."""
    print(f"load average {os.getloadavg()}")
    if path:
        write_json(path, rows)
