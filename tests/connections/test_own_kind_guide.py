"""docs/write-your-own-kind.md runs: its class, shipped in a package outside the repository with an
entry point (and named by import path), trains, evaluates, generates, compares and analyses through
the plain ``hyperconn`` commands; a run whose kind cannot be imported is refused in one line."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tests.support import TINY

import hyperconn
from hyperconn.connections import registry
from hyperconn.connections.invariants import violations

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "write-your-own-kind.md"


def guide_class_code() -> str:
    text = GUIDE.read_text()
    return re.search(r"<!-- guide:kind -->\n```python\n(.*?)```", text, flags=re.S).group(1)


def write_package(root: Path, with_entry_point: bool = True) -> Path:
    """``mykinds`` (the guide's class in ``mykinds/expm.py``) under ``root``, installed-style: a
    ``.dist-info`` with the entry point, as ``pip install`` of a package declaring it writes."""
    pkg = root / "mykinds"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "expm.py").write_text(guide_class_code())
    dist = root / "mykinds-1.2.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: mykinds\nVersion: 1.2\n")
    (dist / "top_level.txt").write_text("mykinds\n")
    if with_entry_point:
        (dist / "entry_points.txt").write_text("[hyperconn.connections]\nexpm = mykinds.expm:ExpOrthogonal\n")
    return root


@pytest.fixture
def installed(tmp_path, monkeypatch):
    root = write_package(tmp_path / "site")
    monkeypatch.syspath_prepend(str(root))
    yield root
    registry._REGISTRY.pop("expm", None)
    for mod in [m for m in sys.modules if m.startswith("mykinds")]:
        del sys.modules[mod]


def test_the_class_is_under_40_lines():
    lines = [line for line in guide_class_code().splitlines() if line.strip()]
    assert len(lines) < 40, len(lines)


def test_the_guides_kind_is_a_rotation_and_used_by_name(installed):
    conn = hyperconn.make_connection("expm", 4, 16, layer_index=1)
    assert type(conn).__module__ == "mykinds.expm"
    torch.manual_seed(0)
    with torch.no_grad():
        for p in conn.parameters():
            p.add_(0.5 * torch.randn_like(p))
    conn = conn.double()
    x = torch.randn(3, 7, 4, 16, dtype=torch.float64)
    res = conn.mixing(x).res
    worst = {k: float(v.max()) for k, v in violations(conn.invariants, res).items()}
    assert max(worst.values()) < 1e-12, worst
    with torch.no_grad():
        torch.testing.assert_close(conn(x, torch.tanh), conn.steps_forward(x, torch.tanh), rtol=1e-12, atol=1e-12)


def test_the_guides_kind_passes_the_conformance_kit(installed):
    from hyperconn.testing import FAST_CHECKS, check_connection

    report = check_connection("expm", checks=FAST_CHECKS)
    assert not report.failed and "invariants" in report.passed and "init" in report.passed


def test_the_guides_kind_in_a_model_and_an_hf_conversion(installed):
    from hyperconn.model import ConnectionConfig, LanguageModel, ModelConfig

    model = LanguageModel(ModelConfig(**TINY, connection=ConnectionConfig("expm", 4)))
    assert {type(c).__name__ for c in model.connections()} == {"ExpOrthogonal"}
    transformers = pytest.importorskip("transformers")
    import hyperconn.hf

    cfg = transformers.LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                   num_attention_heads=2, num_key_value_heads=1, head_dim=8)
    converted = hyperconn.hf.convert(transformers.AutoModelForCausalLM.from_config(cfg), kind="expm", num_streams=4)
    assert {type(c).__name__ for c in hyperconn.hf.hyper_connections(converted)} == {"ExpOrthogonal"}


# runs ``hyperconn`` commands one after the other in one fresh process (one import of torch), each
# with its own captured output and exit code; prints them as JSON on its last line
_SESSION = """
import contextlib, io, json, sys
from hyperconn.cli import main
results = []
for args in json.loads(sys.argv[1]):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(args)
        except SystemExit as exit:
            rc = exit.code if isinstance(exit.code, int) else 1
    results.append({"rc": rc, "out": out.getvalue(), "err": err.getvalue()})
print(json.dumps(results))
"""


def _session(commands: list[list[str]], pythonpath: Path | None, cwd: Path) -> list[dict]:
    """Each ``hyperconn`` command of ``commands`` in one new process, with ``pythonpath`` as its
    only ``PYTHONPATH`` (None: none, so the user's package is not importable)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    done = subprocess.run([sys.executable, "-c", _SESSION, json.dumps(commands)], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _ok(result: dict) -> str:
    assert result["rc"] == 0, result["err"][-3000:]
    return result["out"]


@pytest.mark.slow
def test_an_entry_point_kind_through_every_command(tmp_path, micro_args):
    site = write_package(tmp_path / "site")
    run, cmp = tmp_path / "runs" / "expm", tmp_path / "runs" / "cmp"
    micro = [*micro_args, "--steps", "8"]
    train, ev, gen, analyze, compare, bench = _session([
        ["train", "--preset", "demo", "--kind", "expm", "--out", str(run), *micro],
        ["eval", str(run)],
        ["generate", str(run), "--prompt", "RO", "--max-new-tokens", "5"],
        ["analyze", str(run), "--batches", "1"],
        ["compare", "--preset", "demo", "--kinds", "residual,expm", "--num-streams", "4", "--seeds", "1",
         "--bench-rounds", "0", "--batches", "1", "--out", str(cmp),
         *micro_args, "--steps", "4"],
        ["bench", "layer", "--smoke", "--kinds", "residual,expm"],
    ], site, tmp_path)  # fmt: skip
    _ok(train)
    assert "kind: expm" in (run / "config.yaml").read_text()
    origin = json.loads((run / "provenance.json").read_text())["connection"]
    assert origin == {"kind": "expm", "import_path": "mykinds.expm:ExpOrthogonal", "distribution": "mykinds",
                      "version": "1.2"}
    assert "val_loss" in _ok(ev)
    _ok(gen)
    out = _ok(analyze)
    assert "orthogonal" in out and "determinant_one" in out and "VIOLATED" not in out
    _ok(compare)
    assert "expm-n4" in json.loads((cmp / "summary.json").read_text())["groups"]
    out = _ok(bench)
    assert re.search(r"\bexpm\b", out) and "naive:expm" not in out  # its own mixing is its reference

    # without the package on the path: one line naming the kind, exit 2, for every command that loads it
    refusals = [["eval", str(run)], ["analyze", str(run), "--batches", "1"],
                ["train", "--preset", "demo", "--resume", "--out", str(run), *micro]]
    for args, result in zip(refusals, _session(refusals, None, tmp_path), strict=True):
        assert result["rc"] == 2, (args, result["err"][-2000:])
        assert result["err"].strip().count("\n") == 0 and "expm" in result["err"], result["err"]


@pytest.mark.slow
def test_an_import_path_and_a_script_registered_kind_record_how_to_find_them(tmp_path, micro_args):
    site = write_package(tmp_path / "site", with_entry_point=False)
    micro = [*micro_args, "--steps", "8"]
    by_path, by_name = tmp_path / "runs" / "by-path", tmp_path / "runs" / "by-name"
    (train,) = _session([["train", "--preset", "demo", "--kind", "mykinds.expm:ExpOrthogonal", "--out",
                          str(by_path), *micro]], site, tmp_path)
    _ok(train)
    assert "kind: mykinds.expm:ExpOrthogonal" in (by_path / "config.yaml").read_text()

    # a script registers the class and trains by its short name: the run records the import path
    script = tmp_path / "train_expm.py"
    script.write_text(
        "import sys, hyperconn\nfrom hyperconn.cli import main\nfrom mykinds.expm import ExpOrthogonal\n"
        "hyperconn.register_connection(ExpOrthogonal)\n"
        f"sys.exit(main(['train', '--preset', 'demo', '--kind', 'expm', '--out', {str(by_name)!r}, *{micro!r}]))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "kind: mykinds.expm:ExpOrthogonal" in (by_name / "config.yaml").read_text()
    # a later process finds both from their config.yaml alone
    for result in _session([["eval", str(by_path)], ["eval", str(by_name)]], site, tmp_path):
        assert "val_loss" in _ok(result)
