"""Training-step probes shared by ``compare``: one training step, and its activation memory.

On CPU there is no allocator peak counter per model (the process's peak RSS is dominated by
imports, and in ``compare`` by every run trained before), so memory is measured where the
methods differ: the tensors autograd saves for the backward pass of one training step, counted
once per storage through ``torch.autograd.graph.saved_tensors_hooks``.
"""

from __future__ import annotations

import torch
from torch import nn


def lm_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    logits = model(x)
    return nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))


def training_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> None:
    """Forward, next-token cross-entropy, backward, optimiser step."""
    lm_loss(model, x, y).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def random_batch(batch: int, seq_len: int, vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    tokens = torch.randint(0, vocab, (batch, seq_len + 1))
    return tokens[:, :-1], tokens[:, 1:]


def saved_activation_bytes(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    """Bytes of the distinct storages autograd saves for backward in one forward + loss."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        lm_loss(model, x, y)
    return sum(storages.values())
