"""The corpus build scripts refuse a source archive whose SHA-256 is not the expected one, and never
write into the bundled corpus folder by default."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUNDLED = ROOT / "src" / "hyperconn" / "data" / "corpus"
SCRIPTS = {"build_corpus": "manifest.json", "build_pycode": "pycode.manifest.json"}


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def small_tar(path: Path) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        data = b"not the real sdist\n"
        info = tarfile.TarInfo("pkg-0/README")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize("name", SCRIPTS)
def test_expected_hash_is_the_bundled_manifests(name):
    manifest = json.loads((BUNDLED / SCRIPTS[name]).read_text())
    assert manifest["source"]["sdist_sha256"] == load(name).SDIST_SHA256


@pytest.mark.parametrize("name", SCRIPTS)
def test_tampered_archive_is_refused_and_nothing_written(name, tmp_path, capsys):
    script = load(name)
    sdist = small_tar(tmp_path / script.SDIST_NAME)
    out = tmp_path / "out"
    assert script.main([str(sdist), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    got = hashlib.sha256(sdist.read_bytes()).hexdigest()
    assert len(err.splitlines()) == 1 and got in err and script.SDIST_SHA256 in err and "refusing" in err
    assert not out.exists()
    with pytest.raises(script.SourceMismatch):
        script.build(sdist, out)
    assert not out.exists()


@pytest.mark.parametrize("name", SCRIPTS)
def test_default_out_is_not_the_bundled_folder(name, tmp_path, capsys):
    script = load(name)
    assert script.BUNDLED_DIR.resolve() == BUNDLED.resolve()
    assert script.DEFAULT_OUT.resolve() != BUNDLED.resolve()
    assert script.DEFAULT_OUT.resolve() == (ROOT / "build" / "corpus").resolve()
    before = {p.name: p.stat().st_mtime_ns for p in BUNDLED.iterdir()}
    sdist = small_tar(tmp_path / script.SDIST_NAME)
    assert script.main([str(sdist), "--out", str(BUNDLED)]) == 2
    assert "--replace-bundled" in capsys.readouterr().err
    assert {p.name: p.stat().st_mtime_ns for p in BUNDLED.iterdir()} == before
    # with --replace-bundled the hash check still comes first: a wrong archive writes nothing
    assert script.main([str(sdist), "--out", str(BUNDLED), "--replace-bundled"]) == 2
    assert {p.name: p.stat().st_mtime_ns for p in BUNDLED.iterdir()} == before
