"""One training step: the trainer's, the benchmarks' and the analysis probes' (one definition).

For micro-batches ``(x_m, y_m)``, ``m = 1..M``::

    L = (1/M) sum_m CE(model(x_m), y_m)        forward under autocast(precision), lm_loss in float32
    g = grad L                                 one backward per micro-batch term; gradients accumulate
    |g| = ||g||_2 over ``parameters``           before clipping; g <- g * min(1, grad_clip / |g|)
    theta <- optimizer.step(theta, g);  g <- None

:func:`backward_step` is the first three lines, :func:`apply_update` the last, so a caller can
look at the loss and the norm in between (the trainer refuses a non-finite step there, and defers
a Ctrl-C from the update on); :func:`train_step` is both.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import nullcontext

import torch
from torch import nn

from .loss import lm_loss
from .precision import autocast


def backward_step(
    model: nn.Module,
    micro_batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    *,
    precision: str = "fp32",
    grad_clip: float | None = None,
    parameters: Iterable[nn.Parameter] | None = None,
    grad_sync: nn.Module | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Accumulate the gradients of ``L`` (module doc); return ``(L detached, |g|)``, ``|g|`` None
    when ``grad_clip`` is None (no clipping). ``parameters``: what is clipped (default: ``model``'s);
    ``grad_sync``: a DDP module whose ``no_sync()`` skips the all-reduce on all but the last
    micro-batch, or a :class:`~hyperconn.train.tensor_parallel.TensorParallel` whose
    ``sync_gradients()`` and ``clip_grad_norm()`` replace the plain ones.
    The inputs must already be on the model's device."""
    if not micro_batches:
        raise ValueError("backward_step needs at least one micro-batch")
    device = micro_batches[0][0].device
    total = torch.zeros((), device=device)
    count = len(micro_batches)
    for i, (x, y) in enumerate(micro_batches):
        last = i == count - 1
        sync = nullcontext() if last or not hasattr(grad_sync, "no_sync") else grad_sync.no_sync()
        with sync:
            with autocast(device, precision):
                loss = lm_loss(model, x, y) / count
            loss.backward()
        total += loss.detach()
    if hasattr(grad_sync, "sync_gradients"):  # tensor parallelism: reduce the replicated gradients
        grad_sync.sync_gradients()
    if grad_clip is None:
        return total, None
    if hasattr(grad_sync, "clip_grad_norm"):  # tensor parallelism: the norm over sharded + replicated
        return total, grad_sync.clip_grad_norm(grad_clip)
    params = list(model.parameters() if parameters is None else parameters)
    grad_norm = torch.nn.utils.clip_grad_norm_(params, grad_clip)
    if hasattr(grad_norm, "full_tensor"):  # a DTensor under FSDP
        grad_norm = grad_norm.full_tensor()
    return total, grad_norm


def apply_update(optimizer: torch.optim.Optimizer) -> None:
    """``optimizer.step()`` then drop the gradients."""
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    micro_batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    *,
    precision: str = "fp32",
    grad_clip: float | None = None,
    parameters: Iterable[nn.Parameter] | None = None,
    grad_sync: nn.Module | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """:func:`backward_step` then :func:`apply_update`; returns ``(loss, grad norm)`` as tensors
    (no host synchronisation: call ``.item()`` when the number is needed)."""
    out = backward_step(
        model, micro_batches, precision=precision, grad_clip=grad_clip, parameters=parameters, grad_sync=grad_sync
    )
    apply_update(optimizer)
    return out
