"""``hyperconn.diagnostics.deepseek_v4`` recognises transformers' classes by name: the diagnostics
import and run without transformers, and only DeepSeek-V4 support asks for it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

import hyperconn
from hyperconn.diagnostics import deepseek_v4 as dsv4

PROBE = """
import json, sys
sys.modules["transformers"] = None  # any `import transformers` now raises ImportError
import torch
import hyperconn
from hyperconn.diagnostics import MixingRecorder, deepseek_v4
conn = hyperconn.make_connection("mhc", 4, 8)
with MixingRecorder(torch.nn.ModuleList([conn])) as rec:
    conn(torch.randn(2, 3, 4, 8), torch.nn.Identity())
try:
    deepseek_v4.check_transformers()
    refusal = None
except ImportError as err:
    refusal = str(err)
print(json.dumps({"calls": len(rec.pop()), "is_v4": deepseek_v4.is_deepseek_v4(conn), "refusal": refusal}))
"""


@pytest.mark.slow
def test_runs_without_transformers_and_names_the_extra_when_asked():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["calls"] == 1 and result["is_v4"] is False
    assert "hyperconn[hf]" in result["refusal"]


@pytest.mark.parametrize(
    ("version", "release"),
    [("5.24.0", (5, 24, 0)), ("5.24.0.dev0", (5, 24, 0)), ("6.1", (6, 1)), ("5.25.0rc1", (5, 25, 0)), ("dev", ())],
)
def test_release_reads_the_leading_numbers(version, release):
    assert dsv4._release(version) == release


def _named(class_name: str, module: str) -> type:
    return type(class_name, (torch.nn.Module,), {"__module__": module})


def test_classes_are_recognised_by_name_and_module_only():
    upstream = _named("DeepseekV4HyperConnection", "transformers.models.deepseek_v4.modeling_deepseek_v4")
    subclass = type("Mine", (upstream,), {})
    lookalike = _named("DeepseekV4HyperConnection", "somewhere.else")
    assert dsv4.is_connection(upstream()) and dsv4.is_connection(subclass())
    assert not dsv4.is_connection(lookalike()) and not dsv4.is_connection(hyperconn.make_connection("mhc", 4, 8))
    assert dsv4.is_deepseek_v4(torch.nn.Sequential(subclass())) and not dsv4.is_deepseek_v4(torch.nn.Linear(2, 2))
    head = _named("DeepseekV4HyperHead", "transformers.models.deepseek_v4.modeling_deepseek_v4")
    assert dsv4.is_head(head()) and not dsv4.is_head(upstream())
