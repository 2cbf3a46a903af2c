"""Stability summary: nearest-rank percentile and loss spikes against hand-computed values; steps.csv."""

from __future__ import annotations

import pytest

from hyperconn.train import read_done, read_metrics, train
from hyperconn.train.stability import SPIKE_DEFINITION, loss_spikes, nearest_rank, stability

STEPS = list(range(1, 16))
# steps 1..10 at 4.0 (not judged: fewer than 10 earlier steps); step 11 = 1.2 x median exactly (not a
# spike: the rule is "more than"); step 12 just above it; step 14 well above (median still 4.0)
LOSSES = [4.0] * 10 + [4.8, 4.81, 4.0, 6.0, 4.0]
NORMS = [float(g) for g in (9, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 14, 0.5)]


def test_nearest_rank_on_known_data():
    assert nearest_rank([float(v) for v in range(1, 101)], 0.99) == 99.0
    assert nearest_rank([float(v) for v in range(10, 0, -1)], 0.99) == 10.0  # ceil(9.9) = 10th smallest
    assert nearest_rank([3.0, 1.0, 2.0, 4.0], 0.5) == 2.0
    assert nearest_rank([7.0], 0.99) == 7.0
    with pytest.raises(ValueError, match="q=0"):
        nearest_rank([1.0], 0)
    with pytest.raises(ValueError, match="empty"):
        nearest_rank([], 0.5)


def test_spikes_by_hand():
    assert loss_spikes(STEPS, LOSSES, after_step=0) == [12, 14]
    assert loss_spikes(STEPS, LOSSES, after_step=12) == [14]
    assert loss_spikes(STEPS, LOSSES, after_step=14) == []


def test_stability_summary_by_hand():
    s = stability(STEPS, LOSSES, NORMS, after_step=2)
    post = NORMS[2:]  # steps 3..15
    assert s["after_step"] == 2 and s["steps"] == 13
    assert s["grad_norm_max"] == 14.0
    assert s["grad_norm_p99"] == sorted(post)[12] == 14.0  # ceil(0.99 * 13) = 13th smallest
    assert s["loss_spikes"] == 2 and s["spike_steps"] == [12, 14]
    assert s["spike_definition"] == SPIKE_DEFINITION and "1.2x" in SPIKE_DEFINITION and "10 steps" in SPIKE_DEFINITION
    empty = stability(STEPS, LOSSES, NORMS, after_step=15)
    assert empty["steps"] == 0 and empty["grad_norm_max"] is None and empty["grad_norm_p99"] is None
    assert empty["loss_spikes"] == 0


def test_stability_rejects_bad_input():
    with pytest.raises(ValueError, match="lengths 15, 15, 2"):
        stability(STEPS, LOSSES, [1.0, 2.0], 0)
    with pytest.raises(ValueError, match="ascending"):
        stability([1, 3, 2], [1.0] * 3, [1.0] * 3, 0)


@pytest.mark.slow
def test_every_step_is_recorded_and_summarised_in_done(make_cfg):
    run = train(make_cfg("train.log_interval=4", "train.steps=12"))
    steps = read_metrics(run, "steps.csv")
    assert [r["step"] for r in steps] == list(range(1, 13))  # every step, not only the logged ones
    logged = {r["step"]: r for r in read_metrics(run) if r["loss"] is not None}
    assert sorted(logged) == [4, 8, 12]
    for r in steps:
        if r["step"] in logged:
            keys = ("loss", "grad_norm", "lr")
            assert tuple(r[k] for k in keys) == tuple(logged[r["step"]][k] for k in keys)
    done = read_done(run)
    expected = stability([r["step"] for r in steps], [r["loss"] for r in steps], [r["grad_norm"] for r in steps], 2)
    assert done["stability"] == expected and done["stability"]["steps"] == 10


@pytest.mark.slow
def test_steps_csv_survives_an_interrupt_and_resume(make_cfg, monkeypatch):
    import hyperconn.train.step as step_mod

    full = train(make_cfg(name="full"))
    original = step_mod.lm_loss
    calls = {"n": 0}

    def interrupt_at_6(model, x, y):
        if model.training:
            calls["n"] += 1
            if calls["n"] == 6:
                raise KeyboardInterrupt
        return original(model, x, y)

    with monkeypatch.context() as m:
        m.setattr(step_mod, "lm_loss", interrupt_at_6)
        with pytest.raises(KeyboardInterrupt):
            train(make_cfg(name="cut"))
    cut = make_cfg(name="cut").run_dir
    assert [r["step"] for r in read_metrics(cut, "steps.csv")] == [1, 2, 3, 4, 5]
    train(make_cfg(name="cut"), resume=True)
    assert read_metrics(cut, "steps.csv") == read_metrics(full, "steps.csv")  # each step once, equal values
    assert read_done(cut)["stability"] == read_done(full)["stability"]
