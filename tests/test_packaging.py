"""The package installs beside the user's torch and its core needs torch alone."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import venv
from importlib.metadata import requires
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# (not tqdm: `import torch` itself imports it when it is installed)
HEAVY = (
    "transformers", "datasets", "pyarrow", "grpcio", "matplotlib", "tensorboard", "tokenizers", "yaml", "safetensors",
)

CORE_SCRIPT = textwrap.dedent(
    """
    import sys, torch, hyperconn
    for kind, n in [("residual", 1), ("hc", 3), ("mhc", 4), ("mhc_lite", 3), ("kromhc", 4), ("shc", 4)]:
        conn = hyperconn.make_connection(kind, n, 16)
        opt = torch.optim.SGD(conn.parameters(), lr=0.1) if list(conn.parameters()) else None
        x = hyperconn.expand_streams(torch.randn(2, 5, 16, requires_grad=True), n)
        loss = hyperconn.reduce_streams(conn(x, torch.tanh)).square().mean()
        loss.backward()
        if opt is not None:
            opt.step()
    print("LOADED", sorted(m for m in sys.modules if m.split(".")[0] in {heavy!r}))
    """
)


def test_core_requirements_are_torch_alone_unpinned():
    core = [r for r in requires("hyperconn") if "extra ==" not in r]
    assert [r.split(">")[0].split("=")[0].split("<")[0].strip() for r in core] == ["torch"]
    assert "==" not in core[0], f"torch must not be pinned: {core[0]}"


@pytest.mark.slow
def test_core_import_pulls_no_extra():
    """With every extra installed (this venv), using the connections imports none of them."""
    script = CORE_SCRIPT.format(heavy=set(HEAVY))
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert "LOADED []" in out, out


def test_missing_extra_names_the_extra(monkeypatch):
    from hyperconn._optional import MissingExtraError, require

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    with pytest.raises(
        MissingExtraError, match=r"matplotlib is not installed \(needed for plots\).*hyperconn\[analysis\]"
    ):
        require("matplotlib", "plots")


def test_missing_dependency_of_an_installed_module_is_not_blamed_on_an_extra(monkeypatch, tmp_path):
    """A module that exists but fails on one of ITS imports re-raises the original error."""
    (tmp_path / "brokenmod.py").write_text("import a_module_that_does_not_exist\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    from hyperconn._optional import MissingExtraError, require

    with pytest.raises(ModuleNotFoundError) as info:
        require("brokenmod")
    assert not isinstance(info.value, MissingExtraError)


@pytest.mark.skipif(os.environ.get("SHC_SKIP_INSTALL_TEST") == "1", reason="SHC_SKIP_INSTALL_TEST=1")
@pytest.mark.slow
def test_pip_install_into_an_env_with_torch_keeps_torch_and_adds_nothing_heavy(tmp_path):
    """A fresh venv with the local torch 2.13.0 wheel, then ``pip install .``: torch untouched, no
    extra installed, and a connection of every kind builds and trains."""
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = str(env_dir / "bin" / "python")
    pip = [py, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "torch==2.13.0"], check=True, timeout=600)
    before = subprocess.run([py, "-m", "pip", "freeze"], capture_output=True, text=True, check=True).stdout
    subprocess.run([*pip, str(ROOT)], check=True, timeout=600)
    after = subprocess.run([py, "-m", "pip", "freeze"], capture_output=True, text=True, check=True).stdout
    torch_line = [line for line in before.splitlines() if line.lower().startswith("torch==")]
    assert torch_line and torch_line[0] in after.splitlines(), "pip install . changed torch"
    def names(freeze: str) -> set[str]:  # "pkg==1.0" and "pkg @ file:///..." lines
        return {line.replace(" @ ", "==").split("==")[0].strip().lower() for line in freeze.splitlines()}

    added = names(after) - names(before)
    assert added == {"hyperconn"}, f"pip install . added {sorted(added)}"
    out = subprocess.run(
        [py, "-c", CORE_SCRIPT.format(heavy=set(HEAVY))], capture_output=True, text=True, check=True, cwd=tmp_path
    ).stdout
    assert "LOADED []" in out, out
    # the CLI works without extras and names the one a command needs
    cli = str(env_dir / "bin" / "hyperconn")
    version = subprocess.run([cli, "--version"], capture_output=True, text=True, check=True).stdout
    assert version.startswith("hyperconn ")
    run = subprocess.run([cli, "train", "--preset", "demo", "--out", str(tmp_path / "run")],
                         capture_output=True, text=True)
    assert run.returncode == 2 and "pip install 'hyperconn[train]'" in run.stderr, run.stderr[-2000:]
    assert not (tmp_path / "run").exists()
