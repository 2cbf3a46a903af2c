"""Checkpoints: no pickle code on load, RNG restored, the newest valid one resumed, leftovers cleaned."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from hyperconn.train import load_run, train
from hyperconn.train.checkpoint import (
    STATE,
    WEIGHTS,
    list_checkpoints,
    read_checkpoint,
    read_weights,
    rng_state,
    set_rng_state,
)


def final_weights(run):
    return load_file(str(list_checkpoints(run)[-1] / WEIGHTS))


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_rng_states_round_trip_through_plain_tensors(tmp_path):
    torch.manual_seed(3)
    np.random.seed(4)
    random.seed(5)
    state = rng_state()
    path = tmp_path / "rng.pt"
    torch.save(state, path)
    expected = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    torch.manual_seed(0), np.random.seed(0), random.seed(0)
    set_rng_state(torch.load(path, weights_only=True))  # loads without pickle code
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1])
    assert [random.random() for _ in range(3)] == expected[2]


@pytest.mark.slow
def test_a_trainer_state_with_pickle_code_is_refused_without_running_it(make_cfg, tmp_path):
    run = train(make_cfg("train.steps=4"))
    ckpt = list_checkpoints(run)[-1]
    marker = tmp_path / "pwned"
    state = torch.load(ckpt / STATE, weights_only=True)
    state["payload"] = _Payload(str(marker))
    torch.save(state, ckpt / STATE)
    with pytest.raises(ValueError, match="cannot read trainer.pt as plain tensors"):
        read_checkpoint(ckpt)
    assert not marker.exists()


class _Payload:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.slow
def test_resume_restores_the_saved_rng_state(make_cfg):
    cfg = make_cfg("train.steps=4")
    run = train(cfg)
    ckpt = list_checkpoints(run)[-1]
    state = torch.load(ckpt / STATE, weights_only=True)
    torch.manual_seed(999)
    state["rng"]["torch"] = torch.get_rng_state()  # a state the build would never produce
    expected = torch.rand(4)
    torch.save(state, ckpt / STATE)
    from hyperconn.train import Trainer

    trainer = Trainer(make_cfg("train.steps=4"), resume=True)
    try:
        assert torch.equal(torch.rand(4), expected)
    finally:
        trainer.close()


def corrupt_truncate_weights(ckpt):
    data = (ckpt / WEIGHTS).read_bytes()
    (ckpt / WEIGHTS).write_bytes(data[: len(data) // 2])


def corrupt_bad_header(ckpt):
    data = bytearray((ckpt / WEIGHTS).read_bytes())
    data[:8] = (10**12).to_bytes(8, "little")  # a header length past the end of the file
    (ckpt / WEIGHTS).write_bytes(bytes(data))


def corrupt_missing_state(ckpt):
    (ckpt / STATE).unlink()


def corrupt_truncate_state(ckpt):
    data = (ckpt / STATE).read_bytes()
    (ckpt / STATE).write_bytes(data[: len(data) // 3])


def corrupt_other_step_weights(ckpt):
    weights, _ = read_weights(ckpt)
    save_file(weights, str(ckpt / WEIGHTS), metadata={"step": "1", "format": "2"})


CORRUPTIONS = {
    "truncated weights": (corrupt_truncate_weights, "corrupt: cannot read model.safetensors"),
    "bad header": (corrupt_bad_header, "corrupt: cannot read model.safetensors"),
    "missing trainer state": (corrupt_missing_state, "incomplete: trainer.pt is missing"),
    "truncated trainer state": (corrupt_truncate_state, "cannot read trainer.pt"),
    "weights of another step": (corrupt_other_step_weights, "inconsistent: folder says step 8, weights are from"),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_a_corrupt_newest_checkpoint_is_skipped_and_the_run_still_matches(make_cfg, capsys, name):
    corrupt, reason = CORRUPTIONS[name]
    reference = train(make_cfg("train.steps=8", name="reference"))
    cfg = make_cfg("train.steps=8", name="cut")
    run = train(cfg)
    newest = list_checkpoints(run)[-1]
    assert newest.name == "step_00000008"
    corrupt(newest)
    (run / "DONE").unlink()
    capsys.readouterr()
    train(make_cfg("train.steps=8", name="cut"), resume=True)
    err = capsys.readouterr().err
    assert f"skipped checkpoint step_00000008: checkpoint {newest} is" in err and reason in err
    assert_same_weights(final_weights(run), final_weights(reference))  # resumed from step 4, bit for bit


@pytest.mark.slow
def test_resume_refuses_when_no_checkpoint_is_valid(make_cfg):
    run = train(make_cfg("train.steps=8"))
    for ckpt in list_checkpoints(run):
        corrupt_missing_state(ckpt)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    with pytest.raises(ValueError, match=r"none of its 2 checkpoint\(s\) is valid .*trainer.pt is missing"):
        train(make_cfg("train.steps=8"), resume=True)
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before  # nothing touched


@pytest.mark.slow
def test_stale_temporary_checkpoints_are_removed_on_resume(make_cfg, capsys):
    run = train(make_cfg("train.steps=4"))
    stale = run / "checkpoints" / ".step_00000008.tmp-12345-deadbeef"
    stale.mkdir()
    (stale / WEIGHTS).write_bytes(b"half")
    half_config = run / ".config.yaml.tmp-12345-deadbeef"  # a kill during an atomic write
    half_config.write_text("preset: de")
    capsys.readouterr()
    train(make_cfg("train.steps=8"), resume=True)
    assert not stale.exists() and not half_config.exists()
    err = capsys.readouterr().err
    assert f"removed {stale}" in err and f"removed {half_config}" in err
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step_00000004", "step_00000008"]


@pytest.mark.slow
def test_an_old_format_run_still_loads_but_does_not_resume(make_cfg):
    """Runs written before format 2 (pickled NumPy RNG state) stay readable for eval/analysis."""
    run = train(make_cfg("train.steps=4"))
    ckpt = list_checkpoints(run)[-1]
    weights, _ = read_weights(ckpt)
    save_file(weights, str(ckpt / WEIGHTS), metadata={"step": "4", "format": "1"})
    old_state = {"format": 1, "step": 4, "optimizer": {}, "rng": {"numpy": np.random.get_state()}}
    torch.save(old_state, ckpt / STATE)  # what the old trainer wrote (needs pickle to load)
    model, _, _ = load_run(run)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in weights.items())
    with pytest.raises(ValueError, match="older hyperconn|format 1"):
        train(make_cfg("train.steps=8"), resume=True)
