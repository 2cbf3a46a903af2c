"""Function-preserving initialisation of a built hyper-connection.

A converted model starts from ``n`` identical copies of the embedding and reduces the streams by
their **mean** before the final norm. While every stream holds the same ``x`` one connection
computes::

    u    = (sum_i H_pre[i]) x
    x'_j = (sum_i H_res[i, j]) x + H_post[j] F(u)

so it equals the residual ``x + F(x)`` in every output stream, and the streams stay identical,
exactly when ``sum_i H_pre[i] = 1``, every column of ``H_res`` sums to 1 and ``H_post = 1``.
With the dynamic projections at zero the coefficients are their static values, which
:func:`preserve_function_` writes:

* ``H_pre`` sums to 1 but is **not** uniform: stream ``l mod n`` weighs ``e`` times the others
  (the ratio of the paper's ``sigmoid(+1) / sigmoid(-1)``). A uniform ``H_pre`` with uniform
  ``H_post`` is a fixed point of training: every stream receives the same gradient and they
  never diverge. The uneven ``H_pre`` sends the branch's gradient to one stream more than to the
  others, so ``H_post`` and then the streams move apart from the first step.
* ``H_post = 1`` (for ``2 sigmoid(b)``: ``b = 0``).
* ``H_res`` keeps the kind's own static value: every constrained kind (mhc, mhc_lite, kromhc,
  shc) has columns summing to 1 by construction, which is all the argument above needs; sHC's
  ``J + tanh(b_sigma)(I - J)`` need not be the identity. HC is unconstrained: its static
  ``H_res`` is set to the identity.

The paper's from-scratch init (``H_pre = sigmoid(+-1)``, ``H_post = 2 sigmoid(+-1)``, sum
reduce) scales the branch input and output by ``sum H_pre ~ 1.5`` and ``H_post != 1``: it does not
preserve a pretrained model's function. The derivation is in ``docs/use-in-your-model.md``.

Parameters written (the connections' public parameters): coefficient kinds (mhc, mhc_lite,
kromhc, shc) ``proj`` (zeroed) and ``bias[:n]`` (pre), ``bias[n:2n]`` (post), split by
``group_sizes``; hc ``alpha_proj``, ``beta_proj`` (zeroed), ``alpha_static``, ``beta_static``.
"""

from __future__ import annotations

import math

import torch

from ..connections import HC, CoefficientConnection, HyperConnection, Residual


def preserving_pre(num_streams: int, layer_index: int) -> torch.Tensor:
    """``H_pre`` (n,) summing to 1 with stream ``layer_index mod n`` weighted ``e`` times the rest."""
    weights = torch.ones(num_streams, dtype=torch.float64)
    weights[layer_index % num_streams] = math.e
    return weights / weights.sum()


@torch.no_grad()
def preserve_function_(conn: HyperConnection) -> HyperConnection:
    """Overwrite ``conn``'s static coefficients and zero its dynamic projections so that on
    identical streams it computes ``x + F(x)`` in every stream (see the module docstring).
    Returns ``conn``; raises ``TypeError`` for a connection class it does not know."""
    n = conn.num_streams
    pre = preserving_pre(n, conn.layer_index)
    if isinstance(conn, Residual):
        return conn  # H_pre = H_res = H_post = 1 already, no parameters
    if isinstance(conn, HC):
        conn.alpha_proj.zero_()
        conn.beta_proj.zero_()
        conn.alpha_static[:, 0].copy_(pre)
        conn.alpha_static[:, 1:].copy_(torch.eye(n, dtype=torch.float64))
        conn.beta_static.fill_(1.0)
        return conn
    if isinstance(conn, CoefficientConnection):
        if tuple(conn.group_sizes[:2]) != (n, n):
            raise TypeError(f"{conn.kind}: expected the pre and post groups first, got group sizes {conn.group_sizes}")
        conn.proj.zero_()
        conn.bias[:n].copy_(torch.logit(pre))  # sigmoid(logit(p)) = p
        conn.bias[n : 2 * n].zero_()  # 2 sigmoid(0) = 1
        return conn
    raise TypeError(f"no function-preserving init for {type(conn).__name__} (kind {conn.kind!r})")


@torch.no_grad()
def preservation_error(conn: HyperConnection, probe: torch.Tensor | None = None) -> float:
    """Largest deviation from the preserving conditions on identical streams: ``|sum H_pre - 1|``,
    ``|column sums of H_res - 1|``, ``|H_post - 1|``, over the tokens of ``probe (T, C)`` (random
    when not given). Zero (to rounding) after :func:`preserve_function_`."""
    if probe is None:
        probe = torch.randn(3, conn.dim, generator=torch.Generator().manual_seed(0))
    param = next(conn.parameters(), None)
    if param is not None:
        probe = probe.to(device=param.device, dtype=param.dtype)
    streams = probe.unsqueeze(-2).expand(*probe.shape[:-1], conn.num_streams, conn.dim)
    pre, res, post = conn.mixing(streams)
    return max(
        (pre.sum(-1) - 1).abs().max().item(),
        (res.sum(-2) - 1).abs().max().item(),
        (post - 1).abs().max().item(),
    )
