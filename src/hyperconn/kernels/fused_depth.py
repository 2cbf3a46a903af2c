"""Autograd function around the depth kernels: ``x'_j = mixed_j + h_post_j * F(u)``.

One forward kernel (reads ``mixed`` and the branch output once, writes the new streams) and one
backward kernel (reads the output gradient and the branch output once, writes the branch
gradient and the per-token ``h_post`` gradient); the gradient of ``mixed`` is the output
gradient itself, passed through without a copy. Arithmetic in float32.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from . import fused_width as W
from . import triton_depth as KD


class Depth(torch.autograd.Function):
    """``(mixed (T, n, C), h_post (T, n), branch_out (T, C)) -> new streams (T, n, C)``."""

    @staticmethod
    def forward(ctx, mixed, h_post, branch_out):
        t, n, c = mixed.shape
        post = h_post.detach().float().contiguous()
        out = torch.empty_like(mixed)
        with W._device(mixed):
            KD.depth_fwd_kernel[W._grid(t)](
                mixed, post, branch_out, out, t, C=c, N=n, NP=W._pow2(n, 2), BT=W.BLOCK_T, BK=W.BLOCK_K,
                num_warps=W.NUM_WARPS,
            )
        ctx.save_for_backward(post, branch_out)
        ctx.post_dtype = h_post.dtype
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, dout):
        post, branch_out = ctx.saved_tensors
        dout = dout.contiguous()
        t, n, c = dout.shape
        dbranch = torch.empty_like(branch_out)
        dpost = dout.new_empty(t, n, dtype=torch.float32)
        with W._device(dout):
            KD.depth_bwd_kernel[W._grid(t)](
                dout, post, branch_out, dbranch, dpost, t, C=c, N=n, NP=W._pow2(n, 2), BT=W.BLOCK_T,
                BK=W.BLOCK_K, num_warps=W.NUM_WARPS,
            )
        return dout, dpost.to(ctx.post_dtype), dbranch
