"""Optional fused Triton kernels for the hyper-connection ``width`` and ``depth`` steps.

On a GPU a hyper-connection is pure memory traffic around a few tiny matrices per token; the
PyTorch path reads the ``(T, n, C)`` streams several times and launches dozens of small kernels.
Here (:mod:`hyperconn.kernels.fused_width`, :mod:`hyperconn.kernels.fused_depth`):

- sHC (n = 3, 4), forward: ONE kernel per token block reads the streams for the RMS statistics
  and the projection ``x @ (g W)``, computes every coefficient in registers (gates, biases,
  sigmoids, tanh, closed-form Cayley, ``J + P E P^T``), writes ``h_post`` and mixes the same
  (L2-resident) block into ``u`` and the ``n`` mixed streams. Backward: Triton kernels for every
  pass over the streams; the per-token coefficient math is differentiated by PyTorch autograd.
- Every other coefficient kind: the projection kernel, the module's own PyTorch coefficient math
  on ``(T, few)`` tensors, then the mixing kernel. hc, and any module whose coefficients are its
  own: its PyTorch ``mixing``, then the mixing kernel.
- depth (every kind but residual): one kernel ``x'_j = mixed_j + h_post_j F(u)``.

A module describes itself through :mod:`hyperconn.kernels.interface`; nothing here imports the
connection classes.

Backends, chosen per module (``make_connection(..., backend=...)``), see :func:`select`:

- ``"torch"``: the PyTorch path, always.
- ``"triton"``: the kernels for every CUDA tensor whose shape they can launch; anything else
  (a CPU tensor, Triton missing, too many coefficients) raises. Under Triton's CPU interpreter
  (``TRITON_INTERPRET=1``, the tests) CPU tensors run the kernels too.
- ``"auto"`` (default): the kernels only for the (route, kind, n, dtype) in :data:`VALIDATED`,
  the table of paths whose values and every gradient were checked against PyTorch on GPU hardware
  *with the code as it is now*. Otherwise PyTorch, with a warning on CUDA saying why. CPU tensors
  always take PyTorch. The table is **empty** in this release: the kernels were checked on an H200
  (docs/results/gpu: sHC n = 3, 4 fp32/bf16 and mHC n = 4 bf16 matched, with the Triton
  coefficient backward since removed), but the dispatch around them has changed since and has
  only run under Triton's CPU interpreter. A hardware run of ``benchmarks/gpu_check.py`` is what
  puts a path back into the table; until then ``backend="triton"`` is an explicit opt-in.

Under ``torch.compile`` every backend takes the PyTorch path (Inductor writes its own kernels).
"""

from __future__ import annotations

import functools
import importlib.util
import os
import warnings

import torch

from .interface import GivenCoefficients, KernelRoute, ProjectedCoefficients

__all__ = ["VALIDATED", "depth", "interpreter_active", "select", "unsupported_reason", "width"]

DTYPES = (torch.float32, torch.bfloat16, torch.float16)
MAX_STREAMS = 16
MAX_COEFFICIENTS = 256  # the projection kernel keeps every coefficient of a token block in registers

# (route, kind, n) -> stream dtypes whose values and gradients were checked on GPU hardware with the
# current code (benchmarks/gpu_check.py). Empty: see the module docstring. The earlier H200 check
# (docs/results/gpu/gpu_check_h200.md) covered ("fused_shc", "shc", 3 and 4): fp32, bf16 and
# ("projection", "mhc", 4): bf16, with older dispatch code.
VALIDATED: dict[tuple[str, str, int], tuple[torch.dtype, ...]] = {}

Spec = ProjectedCoefficients | GivenCoefficients
Route = KernelRoute | Spec  # anything with .kind, .route and .total


@functools.cache
def _triton_importable() -> bool:
    return importlib.util.find_spec("triton") is not None


def interpreter_active() -> bool:
    """``TRITON_INTERPRET=1``: Triton runs kernels on CPU tensors (slowly), for tests."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def unsupported_reason(spec: Route, streams: torch.Tensor) -> str | None:
    """Why the kernels cannot run this module on ``streams`` (``None``: they can)."""
    n = streams.shape[-2]
    if not _triton_importable():
        return "Triton is not installed (pip install 'hyperconn[triton]')"
    if not (streams.is_cuda or (streams.device.type == "cpu" and interpreter_active())):
        return f"streams are on {streams.device}; the kernels need a CUDA tensor"
    if streams.dtype not in DTYPES:
        return f"streams dtype {streams.dtype} is not one of float32, bfloat16, float16"
    if not 2 <= n <= MAX_STREAMS:
        return f"num_streams={n} is outside 2..{MAX_STREAMS}"
    if spec.total > MAX_COEFFICIENTS:
        return f"{spec.total} coefficients per token exceed the kernels' {MAX_COEFFICIENTS}"
    return None


def _not_validated_reason(spec: Route, streams: torch.Tensor) -> str | None:
    n = streams.shape[-2]
    if streams.dtype not in VALIDATED.get((spec.route, spec.kind, n), ()):
        return (
            f"{spec.kind} n={n} {streams.dtype} ({spec.route}) has not been validated on hardware with this "
            "version (hyperconn.kernels.VALIDATED); backend='triton' opts in"
        )
    return None


def select(backend: str, spec: Route, streams: torch.Tensor) -> bool:
    """Whether ``backend`` runs this width/depth step in the kernels (see the module docstring)."""
    if backend == "torch" or torch.compiler.is_compiling():
        return False
    if backend == "triton":
        reason = unsupported_reason(spec, streams)
        if reason is not None:
            raise ValueError(f"{spec.kind}: backend='triton' cannot run here: {reason}")
        return True
    if not streams.is_cuda:
        return False
    reason = unsupported_reason(spec, streams) or _not_validated_reason(spec, streams)
    if reason is not None:
        warnings.warn(f"hyperconn {spec.kind}: backend='auto' uses PyTorch: {reason}", stacklevel=4)
        return False
    return True


def width(spec: Spec, streams: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The width step in the kernels: ``(u (..., C), mixed (..., n, C), h_post (..., n) fp32)``."""
    from .fused_width import Mix, Projection, ShcWidth

    n, c = streams.shape[-2:]
    lead = streams.shape[:-2]
    x = streams.reshape(-1, n, c).contiguous()
    with torch.autocast(device_type=x.device.type, enabled=False):
        if isinstance(spec, ProjectedCoefficients):
            if spec.fused_shc:
                u, mixed, post = ShcWidth.apply(
                    x, spec.weight, spec.scale, spec.bias, spec.gamma, spec.coefficient_math, spec.eps
                )
            else:
                raw = Projection.apply(x, spec.weight, spec.eps)
                pre, res, post = spec.coefficient_math(raw * spec.scale + spec.bias)
                u, mixed = Mix.apply(x, pre, res)
        else:
            pre, res, post = spec.mixing(streams)
            u, mixed = Mix.apply(x, pre.reshape(-1, n), res.reshape(-1, n, n))
    return u.reshape(*lead, c), mixed.reshape(*lead, n, c), post.reshape(*lead, n)


def depth(mixed: torch.Tensor, h_post: torch.Tensor, branch_out: torch.Tensor) -> torch.Tensor:
    """The depth step in a kernel: ``mixed_j + h_post_j * branch_out``, in ``mixed``'s dtype."""
    from .fused_depth import Depth

    n, c = mixed.shape[-2:]
    if h_post.shape != mixed.shape[:-1] or branch_out.shape != (*mixed.shape[:-2], c):
        raise ValueError(
            f"hyperconn.kernels.depth: shapes mixed {tuple(mixed.shape)}, h_post {tuple(h_post.shape)}, "
            f"branch_out {tuple(branch_out.shape)} do not match (..., n, C), (..., n), (..., C)"
        )
    if branch_out.dtype not in DTYPES:
        raise ValueError(f"hyperconn.kernels.depth: branch output dtype {branch_out.dtype} is not supported")
    out = Depth.apply(
        mixed.reshape(-1, n, c).contiguous(), h_post.reshape(-1, n), branch_out.reshape(-1, c).contiguous()
    )
    return out.reshape(mixed.shape)
