"""AdamW with the paper's decay policy, and the warm-up + cosine learning-rate schedule.

Weight decay applies to matrices that map features: the attention and MLP projections, the LM
head, and the connections' dynamic projections (``proj`` in mHC/mHC-lite/KromHC/sHC,
``alpha_proj``/``beta_proj`` in HC). No decay on norms (incl. QK-norm and the connections'
RMSNorm gains), biases, the token embedding (and a head tied to it), and the connections'
gates and biases: the scalar gates (``gates``, ``alpha_gate``, ``beta_gate``), the static biases
(``bias``, ``alpha_static``, ``beta_static``) and sHC's Cayley scales ``gamma`` — decaying those
would pull the mixing away from its initial (near-identity) matrix rather than regularise.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..connections import HyperConnection

CONNECTION_DECAYED = ("proj", "alpha_proj", "beta_proj")


def decay_groups(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """``(decay, no_decay)`` parameter lists, each parameter once (tied weights counted once)."""
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    decay: dict[int, nn.Parameter] = {}
    no_decay: dict[int, nn.Parameter] = {}
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if isinstance(module, HyperConnection):
                wanted = name in CONNECTION_DECAYED
            else:
                wanted = isinstance(module, nn.Linear) and name == "weight" and id(p) not in embeddings
            (decay if wanted else no_decay)[id(p)] = p
    for key in decay.keys() & no_decay.keys():  # a tied head stays with the embedding: no decay
        del decay[key]
    return list(decay.values()), list(no_decay.values())


def build_optimizer(
    model: nn.Module, lr: float, betas: tuple[float, float], weight_decay: float, eps: float = 1e-8
) -> torch.optim.AdamW:
    decay, no_decay = decay_groups(model)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps)


def lr_at(step: int, lr: float, min_lr: float, warmup_steps: int, total_steps: int) -> float:
    """Linear warm-up to ``lr`` over ``warmup_steps``, then cosine down to ``min_lr`` at the end.

    ``step`` counts from 0; ``lr_at(warmup_steps - 1) == lr``."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * progress))
