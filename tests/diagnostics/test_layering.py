"""``hyperconn.diagnostics`` sits below the trainer and the analysis: torch and
``hyperconn.connections`` only, no numpy."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

PROBE = """
import json, sys
sys.modules["numpy"] = None  # any `import numpy` now raises ImportError
import warnings; warnings.simplefilter("ignore")
import torch
import hyperconn
from hyperconn.diagnostics import MixingRecorder, metrics
conn = hyperconn.make_connection("shc", 4, 8)
with MixingRecorder(torch.nn.ModuleList([conn])) as rec:
    conn(torch.randn(2, 3, 4, 8), torch.nn.Identity())
value = float(metrics.spectral_norm(rec.pop()[0].res).max())
print(json.dumps({"modules": sorted(m for m in sys.modules if m.startswith("hyperconn")), "spectral_norm": value}))
"""


@pytest.mark.slow
def test_imports_nothing_above_it_and_runs_without_numpy():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    allowed = ("hyperconn.connections", "hyperconn.linalg", "hyperconn.kernels", "hyperconn.diagnostics")
    assert all(m == "hyperconn" or m.startswith(allowed) for m in result["modules"]), result["modules"]
    assert "hyperconn.diagnostics.recorder" in result["modules"]
    assert abs(result["spectral_norm"] - 1.0) < 1e-5  # sHC: on the spectral sphere
