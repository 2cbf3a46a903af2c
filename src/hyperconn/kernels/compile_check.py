"""Compile every kernel for a CUDA architecture without a GPU (Triton's ahead-of-time path).

The interpreter checks the kernels' arithmetic on CPU; this checks that they also lower to PTX
and SASS (layouts, dot shapes, register allocation), which the interpreter never does. Pointer
arguments are marked 16-byte aligned, as Triton's launcher specialises them for aligned tensors.
``ptxas`` ships with Triton, so no CUDA toolkit is needed::

    python -m hyperconn.kernels.compile_check --arch 90 --dtype bf16 --streams 4 --dim 1024

prints, per kernel variant, the registers and the spill stack reported by ``cuobjdump``.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from . import fused_width
from . import triton_backward as KB
from . import triton_depth as KD
from . import triton_forward as KF


@dataclass(frozen=True)
class Compiled:
    name: str
    registers: int | None
    stack_bytes: int | None
    shared_bytes: int


def _variants(dtype: str, n: int, dim: int, bt: int, bk: int, br: int):
    """(name, kernel, {arg: type or constexpr value}) for every variant the autograd functions launch."""
    f32, s = "*fp32", f"*{dtype}"
    np_, ncp = max(triton.next_power_of_2(n), 2), 32 if n == 4 else 16
    precision = "tf32x3" if dtype == "fp32" else "tf32"
    shape = dict(C=dim, N=n, NP=np_, BT=bt, BK=bk)
    width = dict(
        x_ptr=s, wg_ptr=f32, scale_ptr=f32, bias_ptr=f32, gamma_ptr=f32, raw_ptr=f32, inv_rms_ptr=f32,
        post_ptr=f32, u_ptr=s, mixed_ptr=s, pre_ptr=f32, res_ptr=f32, T="i32", eps="fp32",
        **shape, NCP=ncp, DOT_PRECISION=precision,
    )
    for fuse, mix in ((True, True), (True, False), (False, True)):
        yield f"width_fwd fuse_shc={fuse} mix={mix}", KF.width_fwd_kernel, {**width, "FUSE_SHC": fuse, "MIX": mix}
    yield "mix_fwd", KF.mix_fwd_kernel, dict(x_ptr=s, pre_ptr=f32, res_ptr=f32, u_ptr=s, mixed_ptr=s, T="i32", **shape)
    yield "mix_bwd_coef", KB.mix_bwd_coef_kernel, dict(
        x_ptr=s, du_ptr=s, dmixed_ptr=s, dpre_ptr=f32, dres_ptr=f32, T="i32", **shape
    )
    dx = dict(
        x_ptr=s, du_ptr=s, dmixed_ptr=s, pre_ptr=f32, res_ptr=f32, dy_ptr=f32, alpha_ptr=f32, wg_ptr=f32,
        dx_ptr=s, T="i32", **shape, NCP=ncp, DOT_PRECISION=precision,
    )
    for with_mix, with_proj in ((True, True), (True, False), (False, True)):
        yield (f"width_bwd_dx mix={with_mix} proj={with_proj}", KB.width_bwd_dx_kernel,
               {**dx, "WITH_MIX": with_mix, "WITH_PROJ": with_proj})
    yield "proj_bwd_weight", KB.proj_bwd_weight_kernel, dict(
        x_ptr=s, dy_ptr=f32, out_ptr=f32, T="i32", R="i32", tokens_per_split="i32", NCP=ncp, BR=br, BT=bt,
        DOT_PRECISION=precision,
    )
    yield "depth_fwd", KD.depth_fwd_kernel, dict(mixed_ptr=s, post_ptr=f32, b_ptr=s, out_ptr=s, T="i32", **shape)
    yield "depth_bwd", KD.depth_bwd_kernel, dict(
        dout_ptr=s, post_ptr=f32, b_ptr=s, db_ptr=s, dpost_ptr=f32, T="i32", **shape
    )


def _resource_usage(cubin: bytes) -> tuple[int | None, int | None]:
    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    if not os.path.exists(tool):
        return None, None
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        out = subprocess.run([tool, "-res-usage", f.name], capture_output=True, text=True).stdout
    m = re.search(r"REG:(\d+) STACK:(\d+)", out)
    return (int(m.group(1)), int(m.group(2))) if m else (None, None)


def compile_all(
    arch: int = 90, dtype: str = "bf16", streams: int = 4, dim: int = 1024, block_t: int | None = None,
    block_k: int | None = None, num_warps: int | None = None, only: tuple[str, ...] = (),
) -> list[Compiled]:
    """Compile every kernel variant (or those whose name starts with one of ``only``) for
    ``sm_<arch>``; raises on the first compile error."""
    if dtype not in ("bf16", "fp16", "fp32"):
        raise ValueError(f"dtype must be bf16, fp16 or fp32, got {dtype!r}")
    bt = block_t or fused_width.BLOCK_T
    bk = block_k or fused_width.BLOCK_K
    warps = num_warps or fused_width.NUM_WARPS
    target = GPUTarget("cuda", arch, 32)
    out = []
    for name, kernel, args in _variants(dtype, streams, dim, bt, bk, fused_width.BLOCK_R):
        if only and not name.startswith(tuple(only)):
            continue
        names = kernel.arg_names
        signature = {a: (args[a] if isinstance(args[a], str) and a not in ("DOT_PRECISION",) else "constexpr")
                     for a in names}
        constexprs = {a: args[a] for a in names if signature[a] == "constexpr"}
        aligned = {(i,): [["tt.divisibility", 16]] for i, a in enumerate(names) if signature[a].startswith("*")}
        src = ASTSource(fn=kernel, signature=signature, constexprs=constexprs, attrs=aligned)
        compiled = triton.compile(src, target=target, options={"num_warps": warps})
        regs, stack = _resource_usage(compiled.asm["cubin"])
        out.append(Compiled(name, regs, stack, compiled.metadata.shared))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, default=90, help="compute capability x 10 (90 = H100/H200)")
    parser.add_argument("--dtype", default="bf16", choices=("bf16", "fp16", "fp32"))
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--block-t", type=int)
    parser.add_argument("--block-k", type=int)
    parser.add_argument("--num-warps", type=int)
    parser.add_argument("--only", default="", help="comma list of kernel-name prefixes (default: all)")
    args = parser.parse_args(argv)
    only = tuple(p for p in args.only.split(",") if p)
    compiled = compile_all(
        args.arch, args.dtype, args.streams, args.dim, args.block_t, args.block_k, args.num_warps, only
    )
    for c in compiled:
        print(f"{c.name:40s} registers {c.registers}  spill stack {c.stack_bytes} B  shared {c.shared_bytes} B")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
