"""The bundled Python-source corpus: integrity, whole-file split, reproducible build, data path, training."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import io
import json
import tarfile
from pathlib import Path

import pytest
from tests.support import micro_settings

from hyperconn.data import DataConfig, prepare_data, pycode

ROOT = Path(__file__).resolve().parents[2]


def _build_script():
    spec = importlib.util.spec_from_file_location("build_pycode", ROOT / "scripts" / "build_pycode.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_file_matches_recorded_sha256_and_sizes():
    m = pycode.CORPUS.manifest()
    data = pycode.CORPUS.path().read_bytes()
    assert hashlib.sha256(data).hexdigest() == m["sha256"]
    assert len(data) == m["compressed_bytes"] < 3 * 2**20
    assert m["source"]["package"] == "networkx" and m["source"]["licence"] == "BSD-3-Clause"
    assert "Redistribution and use in source and binary forms" in m["source"]["licence_text"]
    files = pycode.load_files()
    assert [f.path for f in files] == [d["path"] for d in m["documents"]] == sorted(f.path for f in files)
    for f, entry in zip(files, m["documents"], strict=True):
        raw = f.text.encode("utf-8")
        assert (len(raw), hashlib.sha256(raw).hexdigest()) == (entry["bytes"], entry["sha256"])
        assert f.text.endswith("\n") and not f.text.startswith("\n") and "\r" not in f.text
    assert sum(d["bytes"] for d in m["documents"]) == m["total_bytes"] > 5_000_000


def test_split_is_disjoint_whole_files_by_the_recorded_rule():
    files = pycode.load_files()
    train, val = pycode.split_files(files)
    train_paths, val_paths = {f.path for f in train}, {f.path for f in val}
    assert not train_paths & val_paths
    assert train_paths | val_paths == {f.path for f in files}
    assert val_paths == set(pycode.CORPUS.held_out())
    sizes = {f.path: len(f.text.encode()) for f in files}
    assert sorted(val_paths) == _build_script().choose_val(sizes)  # the documented rule, recomputed
    val_bytes = sum(sizes[p] for p in val_paths)
    assert val_bytes == pycode.CORPUS.manifest()["val_bytes"]
    assert 0.1 <= val_bytes / sum(sizes.values()) < 0.12


def test_tampered_file_is_refused(tmp_path):
    m = pycode.CORPUS.manifest()
    (tmp_path / m["file"]).write_bytes(pycode.CORPUS.path().read_bytes()[:-1] + b"\0")
    (tmp_path / pycode.CORPUS.manifest_file).write_text(json.dumps(m))
    with pytest.raises(ValueError, match="SHA-256 does not match"):
        pycode.load_files(dataclasses.replace(pycode.CORPUS, directory=tmp_path))


def _fake_sdist(path: Path, files: dict[str, str]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, body in files.items():
            data = body.encode()
            info = tarfile.TarInfo(f"networkx-3.4.2/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_build_is_reproducible_and_normalises(tmp_path):
    build = _build_script()
    files = {
        "LICENSE.txt": "BSD licence text\n",
        "networkx/__init__.py": "\n\n",  # empty after normalisation: dropped
        "networkx/b.py": "\r\n\r\ndef f(x):   \r\n\treturn x\t\r\n\r\n",
        "networkx/sub/a.py": "A = 1\n",
        "networkx/sub/notes.txt": "not python\n",
        "doc/conf.py": "outside the package\n",
    }
    sdist = _fake_sdist(tmp_path / "fake.tar.gz", files)
    digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
    m1, m2 = (build.build(sdist, tmp_path / d, expected_sha256=digest) for d in ("o1", "o2"))
    f1, f2 = (tmp_path / d / build.CORPUS_FILE for d in ("o1", "o2"))
    assert f1.read_bytes() == f2.read_bytes()
    assert m1["sha256"] == m2["sha256"] == hashlib.sha256(f1.read_bytes()).hexdigest()
    assert m1["source"]["sdist_sha256"] == hashlib.sha256(sdist.read_bytes()).hexdigest()
    assert [d["path"] for d in m1["documents"]] == ["networkx/b.py", "networkx/sub/a.py"]
    assert m1["empty_files_dropped"] == 1 and m1["source"]["licence_text"] == "BSD licence text\n"
    texts = {d["path"]: d["text"] for d in build.read_sdist(sdist)[0]}
    assert texts["networkx/b.py"] == "def f(x):\n\treturn x\n"
    assert len(m1["val_documents"]) == 1  # one of two files, never both
    (tmp_path / "nolicence.tar.gz").write_bytes(b"")
    bad = _fake_sdist(tmp_path / "nolicence.tar.gz", {"networkx/a.py": "A = 1\n"})
    with pytest.raises(ValueError, match="LICENSE.txt"):
        build.build(bad, tmp_path / "o3", expected_sha256=hashlib.sha256(bad.read_bytes()).hexdigest())


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("pycode-cache")


@pytest.mark.slow
def test_loads_through_the_data_path(cache_dir):
    data = prepare_data(DataConfig(source="pycode", tokenizer="byte", cache_dir=str(cache_dir)))
    m = pycode.CORPUS.manifest()
    n_val = len(m["val_documents"])
    assert data.val_bytes == m["val_bytes"]
    assert data.n_val_tokens == m["val_bytes"] + n_val  # byte tokens + one eos per document
    assert data.train.shape[0] == m["total_bytes"] - m["val_bytes"] + len(m["documents"]) - n_val
    first_val = next(f for f in pycode.load_files() if f.path == m["val_documents"][0])
    assert bytes(data.val[: 200].astype("uint8").tolist()) == first_val.text.encode()[:200]


@pytest.mark.slow
def test_a_few_training_steps(cache_dir, tmp_path):
    from hyperconn.train import build_config, read_metrics, train

    settings = micro_settings("data.source=pycode", f"data.cache_dir={cache_dir}", without=("train.steps",))
    cfg = build_config(preset="demo", overrides=settings, kind="shc", num_streams=2, steps=3, out=str(tmp_path / "r"))
    run = train(cfg)
    rows = read_metrics(run)
    val = [r["val_loss"] for r in rows if r.get("val_loss") not in (None, "")]
    assert len(val) >= 1 and all(0 < float(v) < 10 for v in val)


def test_unknown_bundled_name_still_refused():
    with pytest.raises(ValueError, match="'pycode2' is not allowed"):
        DataConfig(source="pycode2").validate()
