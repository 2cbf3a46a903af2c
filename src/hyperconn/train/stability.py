"""Training stability over a run's per-step records (``steps.csv``): gradient-norm tail and loss spikes.

:func:`stability` is a pure function of the per-step lists. Over the steps ``s > after_step``
(the steps after warm-up):

- ``grad_norm_max``: the largest gradient norm (before clipping);
- ``grad_norm_p99``: the nearest-rank 99th percentile, the ``ceil(0.99 n)``-th smallest of the
  ``n`` values (:func:`nearest_rank`);
- ``loss_spikes``: the steps whose training loss exceeds ``SPIKE_FACTOR`` (1.2) times the median
  of the ``SPIKE_WINDOW`` (10) steps recorded just before it (those may be warm-up steps); a step
  with fewer than 10 recorded steps before it is not judged.
"""

from __future__ import annotations

import math
import statistics

SPIKE_FACTOR = 1.2
SPIKE_WINDOW = 10
SPIKE_DEFINITION = (
    f"a step after warm-up whose training loss exceeds {SPIKE_FACTOR}x the median training loss of the "
    f"{SPIKE_WINDOW} steps just before it (steps with fewer than {SPIKE_WINDOW} earlier steps are not judged)"
)
P99_DEFINITION = "nearest rank: the ceil(0.99 n)-th smallest of the n gradient norms"


def nearest_rank(values: list[float], q: float) -> float:
    """The nearest-rank ``q``-quantile (``0 < q <= 1``): the ``ceil(q n)``-th smallest value."""
    if not values:
        raise ValueError("nearest_rank of an empty list")
    if not 0 < q <= 1:
        raise ValueError(f"q={q!r}: must be in (0, 1]")
    ordered = sorted(values)
    return ordered[max(math.ceil(q * len(ordered)), 1) - 1]


def loss_spikes(steps: list[int], losses: list[float], after_step: int) -> list[int]:
    """The steps ``> after_step`` that are loss spikes (module docstring); ``steps`` ascending."""
    spikes = []
    for i, (step, loss) in enumerate(zip(steps, losses, strict=True)):
        if step <= after_step or i < SPIKE_WINDOW:
            continue
        if loss > SPIKE_FACTOR * statistics.median(losses[i - SPIKE_WINDOW : i]):
            spikes.append(step)
    return spikes


def stability(steps: list[int], losses: list[float], grad_norms: list[float], after_step: int) -> dict:
    """``{"after_step", "steps", "grad_norm_max", "grad_norm_p99", "p99_definition", "loss_spikes",
    "spike_steps", "spike_definition"}`` over the steps ``> after_step`` (None maxima when there are none)."""
    if not len(steps) == len(losses) == len(grad_norms):
        raise ValueError(f"steps, losses, grad_norms have lengths {len(steps)}, {len(losses)}, {len(grad_norms)}")
    if any(b <= a for a, b in zip(steps, steps[1:], strict=False)):
        raise ValueError("steps must be strictly ascending")
    norms = [g for s, g in zip(steps, grad_norms, strict=True) if s > after_step]
    spikes = loss_spikes(steps, losses, after_step)
    return {
        "after_step": after_step,
        "steps": len(norms),
        "grad_norm_max": max(norms) if norms else None,
        "grad_norm_p99": nearest_rank(norms, 0.99) if norms else None,
        "p99_definition": P99_DEFINITION,
        "loss_spikes": len(spikes),
        "spike_steps": spikes,
        "spike_definition": SPIKE_DEFINITION,
    }
