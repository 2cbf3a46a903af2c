"""The kernels lower to sm_90 machine code (Triton's ahead-of-time compile, no GPU needed).

The interpreter never lowers a kernel, so layout, dot-shape and register-allocation errors would
only show on a GPU; this compiles the variants an sHC training step launches, in a subprocess
because this test session runs Triton in interpreter mode.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

# the variants an sHC training step launches (the rest: `python -m hyperconn.kernels.compile_check`)
SHC_PATH = (
    "width_fwd fuse_shc=True mix=True", "mix_bwd_coef", "width_bwd_dx mix=True proj=True", "proj_bwd_weight",
    "depth_fwd", "depth_bwd",
)


@pytest.mark.slow
def test_every_kernel_compiles_for_sm90():
    pytest.importorskip("triton")
    if importlib.util.find_spec("triton.backends.nvidia") is None:
        pytest.skip("this Triton build has no NVIDIA backend")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    cmd = [sys.executable, "-m", "hyperconn.kernels.compile_check", "--arch", "90", "--dtype", "bf16", "--dim", "64",
           "--only", ",".join(SHC_PATH)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if "registers" in line]
    assert len(lines) == len(SHC_PATH), proc.stdout
    print(proc.stdout)
