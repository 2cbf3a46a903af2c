"""provenance.collect (git state, packages, machine) and provenance.json in the run directory."""

from __future__ import annotations

import json
import subprocess
from datetime import datetime

import pytest

from hyperconn.train import read_provenance, train
from hyperconn.train.provenance import FIELDS, UNKNOWN_START, collect, default_source_dir, package_versions


def git(repo, *args):
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    root = tmp_path / "repo"
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "code.py").write_text("x = 1\n")
    (root / ".gitignore").write_text("venv/\n")
    git(root, "init", "-q")
    git(root, "add", ".")
    git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "first")
    return root


def test_commit_and_dirty_from_a_git_checkout(repo):
    clean = collect(source_dir=repo / "pkg")
    assert clean["commit"] == git(repo, "rev-parse", "HEAD") and len(clean["commit"]) == 40
    assert clean["dirty"] is False and clean["commit"][:7] in clean["describe"]
    (repo / "pkg" / "new.py").write_text("untracked\n")
    assert collect(source_dir=repo / "pkg")["dirty"] is False  # untracked files are ignored
    (repo / "pkg" / "code.py").write_text("x = 2\n")
    dirty = collect(source_dir=repo / "pkg")
    assert dirty["dirty"] is True and "uncommitted" in dirty["describe"]


def test_none_outside_git_in_an_ignored_folder_and_without_git(repo, tmp_path, monkeypatch):
    outside = tmp_path / "plain"
    outside.mkdir()
    got = collect(source_dir=outside)
    assert got["commit"] is None and got["dirty"] is None and "not a git checkout" in got["describe"]
    (repo / "venv" / "site").mkdir(parents=True)
    assert collect(source_dir=repo / "venv" / "site")["commit"] is None  # not this checkout's code
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))
    assert collect(source_dir=repo / "pkg")["commit"] is None  # git missing: no error


def test_collect_is_json_with_packages_and_machine():
    import torch

    got = json.loads(json.dumps(collect()))
    assert set(got) == set(FIELDS)
    assert got["source"] == str(default_source_dir())
    assert got["packages"]["torch"] == torch.__version__ and got["packages"]["hyperconn"] is not None
    assert package_versions(("no-such-distribution-hc",)) == {"no-such-distribution-hc": None}
    assert got["machine"]["cpu_count"] >= 1 and got["machine"]["hostname"]
    assert datetime.fromisoformat(got["time"]).utcoffset().total_seconds() == 0


@pytest.mark.slow
def test_a_run_records_its_start_and_each_resume(make_cfg):
    run = train(make_cfg())
    record = read_provenance(run)
    here = collect()
    assert record["commit"] == here["commit"] and record["packages"] == here["packages"]
    assert record["resumes"] == []
    train(make_cfg("train.steps=10"), resume=True)
    resumed = read_provenance(run)
    assert len(resumed["resumes"]) == 1 and resumed["resumes"][0]["commit"] == here["commit"]
    assert {k: resumed[k] for k in FIELDS} == {k: record[k] for k in FIELDS}  # the start is kept


@pytest.mark.slow
def test_a_run_from_before_provenance_gets_an_unknown_start_on_resume(make_cfg, tmp_path):
    run = train(make_cfg())
    (run / "provenance.json").unlink()
    assert read_provenance(run) is None
    train(make_cfg("train.steps=10"), resume=True)
    record = read_provenance(run)
    assert record["describe"] == UNKNOWN_START and record["commit"] is None and len(record["resumes"]) == 1
    assert read_provenance(tmp_path / "nothing-here") is None


def test_a_failed_git_status_is_unknown_not_clean(repo, monkeypatch):
    from hyperconn.train import provenance

    real = provenance._git

    def failing_status(source, *args):
        if args[:1] == ("status",):
            return subprocess.CompletedProcess(["git", *args], 128, "", "fatal: index file corrupt")
        return real(source, *args)

    monkeypatch.setattr(provenance, "_git", failing_status)
    got = collect(source_dir=repo / "pkg")
    assert got["commit"] == git(repo, "rev-parse", "HEAD") and got["dirty"] is None


def test_compile_mode_follows_what_the_trainer_compiles(make_cfg):
    from hyperconn.train.build import build_plain, compiled_forward
    from hyperconn.train.provenance import COMPILE_BLOCKS, COMPILE_OFF, COMPILE_WHOLE, compile_mode

    cfg = make_cfg("train.compile=true", "model.vocab_size=64")
    assert compile_mode(make_cfg().train) == COMPILE_OFF
    assert compile_mode(cfg.train, distributed=False) == COMPILE_BLOCKS
    assert compile_mode(make_cfg("train.compile=true", "train.fsdp=true").train, distributed=True) == COMPILE_WHOLE
    assert compile_mode(make_cfg("train.compile=true", "train.fsdp=true").train, distributed=False) == COMPILE_BLOCKS
    # the trainer's own choice (compiled lazily: nothing compiles here): blocks in place, or a wrapper
    for sharded, mode in ((False, COMPILE_BLOCKS), (True, COMPILE_WHOLE)):
        model = build_plain(cfg, 0)
        try:
            called = compiled_forward(model, model, sharded)
        except ValueError as err:  # no C++ compiler: the trainer refuses train.compile here
            pytest.skip(str(err))
        assert (called is model) == (mode == COMPILE_BLOCKS)


def test_the_run_records_its_compile_mode_per_segment(make_cfg, tmp_path):
    from hyperconn.train.provenance import COMPILE_BLOCKS, COMPILE_OFF, record_resume, record_start
    from hyperconn.train.rundir import write_config

    run = tmp_path / "run"
    run.mkdir()
    write_config(run, make_cfg())
    assert record_start(run)["compile"] == COMPILE_OFF
    write_config(run, make_cfg("train.compile=true"))  # a resume that turns compile on
    record_resume(run)
    record = read_provenance(run)
    assert record["compile"] == COMPILE_OFF and record["resumes"][0]["compile"] == COMPILE_BLOCKS
    bare = tmp_path / "bare"
    bare.mkdir()
    assert record_start(bare)["compile"] is None  # no config.yaml: not recorded


def test_the_run_records_where_its_connection_kind_comes_from(make_cfg, tmp_path):
    from hyperconn.train.provenance import record_resume, record_start
    from hyperconn.train.rundir import write_config

    run = tmp_path / "run"
    run.mkdir()
    write_config(run, make_cfg())
    kind = read_config_kind = make_cfg().model.connection.kind
    origin = record_start(run)["connection"]
    assert origin["kind"] == read_config_kind and origin["distribution"] == "hyperconn"
    assert origin["import_path"].startswith("hyperconn.connections.") and origin["version"]
    assert record_resume(run)["resumes"][0]["connection"] == origin
    bare = tmp_path / "bare"
    bare.mkdir()
    assert record_start(bare)["connection"] is None and kind
