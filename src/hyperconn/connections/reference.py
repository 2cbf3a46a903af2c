"""The naive reference: a transcription of the official math (docs/design.md sections 1-2),
the one PyTorch definition of every kind's coefficients that the fast paths, the no-grad decode
path and the kernels are tested against, and the benchmarks' reference point.

Written for clarity, not speed: the normalised ``n*C`` tensor is materialised, every coefficient
group has its own matmul, the Cayley transform is a ``torch.linalg.solve`` of the explicit skew
matrix, and every product is an ``einsum``. It reads a connection only through its public
configuration (``num_streams``, ``dim``, ``layer_index``, options) and its ``state_dict``, so it
is an independent check of the fast paths in ``hyperconn.connections``.
"""

from __future__ import annotations

import itertools
import math

import torch

from .base import HyperConnection


def _skew(z: torch.Tensor, m: int) -> torch.Tensor:
    a = torch.zeros(*z.shape[:-1], m, m, dtype=z.dtype)
    idx = 0
    for i in range(m):
        for j in range(i + 1, m):
            a[..., i, j] = z[..., idx]
            a[..., j, i] = -z[..., idx]
            idx += 1
    return a


def _cayley_solve(a: torch.Tensor) -> torch.Tensor:
    eye = torch.eye(a.shape[-1], dtype=a.dtype).expand_as(a)
    return torch.linalg.solve(eye + a, eye - a)


def _helmert(n: int, dtype: torch.dtype) -> torch.Tensor:
    p = torch.zeros(n, n - 1, dtype=dtype)
    for i in range(1, n):
        p[:i, i - 1] = 1 / math.sqrt(i * (i + 1))
        p[i, i - 1] = -i / math.sqrt(i * (i + 1))
    return p


def _split_groups(conn: HyperConnection, state: dict, x: torch.Tensor) -> list[torch.Tensor]:
    """``s_g * (RMSNorm(flatten(x)) @ W_g) + b_g`` for every coefficient group g, separately."""
    flat = x.reshape(*x.shape[:-2], -1)
    normed = flat / torch.sqrt(flat.pow(2).mean(-1, keepdim=True) + conn.eps) * state["norm_weight"]
    out, start = [], 0
    for g, size in enumerate(conn.group_sizes):
        w = state["proj"][:, start : start + size]
        b = state["bias"][start : start + size]
        out.append(state["gates"][g] * torch.einsum("...f,fk->...k", normed, w) + b)
        start += size
    return out


NAIVE_KINDS = ("residual", "hc", "mhc", "mhc_lite", "kromhc", "shc", "identity", "orthogonal")
"""The kinds transcribed here (a kind of your own has its own ``mixing`` as its reference)."""


def naive_mixing(conn: HyperConnection, streams: torch.Tensor, state: dict | None = None):
    """``(H_pre, H_res, H_post)`` of ``conn`` at ``streams``, computed the slow, obvious way.

    ``state`` defaults to ``conn.state_dict()`` (pass tensors that require grad to differentiate
    with respect to the parameters). Computed in the streams' dtype (use float64 for gradcheck).
    """
    state = dict(conn.state_dict()) if state is None else state
    x = streams
    n = conn.num_streams
    kind = conn.kind
    if kind == "residual":
        ones = torch.ones(x.shape[:-1], dtype=x.dtype)
        return ones, ones.unsqueeze(-1), ones
    if kind == "hc":
        normed = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + conn.eps) * state["norm_weight"]
        alpha = state["alpha_static"] + state["alpha_gate"] * torch.tanh(
            torch.einsum("...sc,ck->...sk", normed, state["alpha_proj"])
        )
        post = state["beta_static"] + state["beta_gate"] * torch.tanh(
            torch.einsum("...sc,c->...s", normed, state["beta_proj"])
        )
        return alpha[..., 0], alpha[..., 1:], post

    groups = _split_groups(conn, state, x)
    pre = torch.sigmoid(groups[0])
    post = 2 * torch.sigmoid(groups[1])
    if kind == "mhc":
        logits = groups[2].reshape(*groups[2].shape[:-1], n, n)
        for _ in range(conn.sinkhorn_iters):
            logits = logits - torch.logsumexp(logits, dim=-2, keepdim=True)
            logits = logits - torch.logsumexp(logits, dim=-1, keepdim=True)
        res = logits.exp()
    elif kind == "mhc_lite":
        weights = torch.softmax(groups[2], dim=-1)
        perms = list(itertools.permutations(range(n)))
        mats = torch.zeros(len(perms), n, n, dtype=x.dtype)
        for r, perm in enumerate(perms):
            for i, j in enumerate(perm):
                mats[r, i, j] = 1.0
        res = torch.einsum("...r,rij->...ij", weights, mats)
    elif kind == "kromhc":
        k = int(math.log2(n))
        res = None
        for f in range(k):
            p = torch.softmax(groups[2][..., 2 * f : 2 * f + 2], dim=-1)[..., 0]
            u = torch.stack([torch.stack([p, 1 - p], -1), torch.stack([1 - p, p], -1)], -2)
            res = u if res is None else torch.einsum("...ab,...cd->...acbd", res, u).reshape(
                *u.shape[:-2], res.shape[-1] * 2, res.shape[-1] * 2
            )
    elif kind == "shc":
        m = n - 1
        if m == 1:  # no rotations (and no gamma): E = sigma
            e = torch.tanh(groups[2]).unsqueeze(-1)
        else:
            gamma_u, gamma_v = state["gamma"][0], state["gamma"][1]
            u = _cayley_solve(_skew(gamma_u * torch.tanh(groups[2]), m))
            v = _cayley_solve(_skew(gamma_v * torch.tanh(groups[3]), m))
            sigma = torch.tanh(groups[4])
            e = torch.einsum("...ij,...j,...kj->...ik", u, sigma, v)
        p = _helmert(n, x.dtype)
        res = torch.full((n, n), 1 / n, dtype=x.dtype) + torch.einsum("ai,...ij,bj->...ab", p, e, p)
    elif kind == "identity":
        res = torch.eye(n, dtype=x.dtype).expand(*x.shape[:-2], n, n)
    elif kind == "orthogonal":
        res = _cayley_solve(_skew(state["gamma"][0] * torch.tanh(groups[2]), n))
    else:
        raise ValueError(f"naive_mixing: unknown kind {kind!r}")
    return pre, res, post


def naive_forward(conn: HyperConnection, streams: torch.Tensor, branch, state: dict | None = None):
    """``x'_j = sum_i H_res[i, j] x_i + H_post[j] F(sum_i H_pre[i] x_i)`` with einsum."""
    pre, res, post = naive_mixing(conn, streams, state)
    u = torch.einsum("...s,...sc->...c", pre, streams)
    mixed = torch.einsum("...st,...sc->...tc", res, streams)
    return mixed + torch.einsum("...t,...c->...tc", post, branch(u))
