"""Training-step probes shared by ``compare``: one step, and the peak memory of a few steps.

``python -m shc.analysis.probe CONFIG_YAML [STEPS]`` builds the model a run's ``config.yaml``
describes (random weights), runs ``STEPS`` training steps (forward, backward, AdamW) on one
random batch of the run's shape, and prints JSON with the process's resident set size before
the steps and at its peak. Run in a fresh process, so the peak belongs to this model alone (the
trainer's CPU ``peak_mem_mb`` is the peak of the whole process, which in ``compare`` holds every
run trained before).
"""

from __future__ import annotations

import json
import resource
import sys

import torch
from torch import nn


def training_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> None:
    """Forward, next-token cross-entropy, backward, optimiser step."""
    logits = model(x)
    loss = nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def random_batch(batch: int, seq_len: int, vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    tokens = torch.randint(0, vocab, (batch, seq_len + 1))
    return tokens[:, :-1], tokens[:, 1:]


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def memory_probe(config_path: str, steps: int = 3) -> dict:
    from ..model import LanguageModel
    from ..train.config import load_config

    cfg = load_config(config_path)
    if cfg.train.threads is not None:
        torch.set_num_threads(cfg.train.threads)
    torch.manual_seed(0)
    model = LanguageModel(cfg.model).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x, y = random_batch(cfg.train.batch_size, cfg.train.seq_len, cfg.model.vocab_size)
    before = _rss_mb()
    for _ in range(steps):
        training_step(model, optimizer, x, y)
    peak = _rss_mb()
    return {"rss_before_steps_mb": before, "peak_rss_mb": peak, "steps_increase_mb": peak - before}


if __name__ == "__main__":
    print(json.dumps(memory_probe(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 3)))
