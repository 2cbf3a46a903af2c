"""The shared test helpers of tests/support.py: what the other tests build on must itself hold."""

from pathlib import Path

import pytest
import torch
from tests.support import MICRO, micro_settings, perturb, set_args, slow_unless


def test_micro_settings_replace_in_place_append_and_leave_out():
    assert micro_settings() == list(MICRO)
    changed = micro_settings("train.steps=3", "train.grad_accum=2")
    keys = [s.split("=", 1)[0] for s in changed]
    assert len(keys) == len(set(keys))  # every key once
    assert changed[keys.index("train.steps")] == "train.steps=3"
    assert keys.index("train.steps") == [s.split("=", 1)[0] for s in MICRO].index("train.steps")  # in place
    assert changed[-1] == "train.grad_accum=2"  # a new key is appended
    without = micro_settings("data.source=x", without=("train.steps", "train.lr"))
    assert not any(s.startswith(("train.steps=", "train.lr=")) for s in without)
    assert len(without) == len(MICRO) - 1 and without[-1] == "data.source=x"


def test_micro_settings_refuse_a_bad_change_or_an_unknown_key():
    with pytest.raises(ValueError, match="'train.steps' is not of the form 'key=value'"):
        micro_settings("train.steps")
    with pytest.raises(ValueError, match="without='train.stepz': not a key of MICRO"):
        micro_settings(without=("train.stepz",))


def test_slow_unless_marks_only_the_cases_left_out_of_the_fast_set():
    assert slow_unless(True, "llama") == "llama"
    assert slow_unless(True, "llama", "shc", 4) == ("llama", "shc", 4)
    for case, values in ((slow_unless(False, "llama"), ("llama",)), (slow_unless(False, "qwen2", 4), ("qwen2", 4))):
        assert case.values == values
        assert [mark.name for mark in case.marks] == ["slow"]


def test_set_args_pairs_each_setting_with_its_flag():
    assert set_args(["a=1", "b=2"]) == ["--set", "a=1", "--set", "b=2"]


def test_perturb_is_seeded_and_adds_scaled_standard_normal_noise():
    a, b = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    b.load_state_dict(a.state_dict())
    before = [p.detach().clone() for p in a.parameters()]
    perturb(a, scale=0.5, seed=7)
    perturb([b], scale=0.5, seed=7)
    generator = torch.Generator().manual_seed(7)
    for p, q, p0 in zip(a.parameters(), b.parameters(), before, strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)  # a module or an iterable of modules: the same
        torch.testing.assert_close(p - p0, 0.5 * torch.randn(p.shape, generator=generator))
    with pytest.raises(ValueError, match="perturb takes modules and tensors, not int"):
        perturb([1])


def test_test_modules_are_named_from_the_repository_root():
    """``tests/kernels`` is ``tests.kernels``, never the top-level ``kernels``: that name belongs to
    the Hugging Face package transformers looks up, and shadowing it broke the hf tests' import
    whenever tests/kernels was collected first (``consider_namespace_packages`` in pyproject.toml)."""
    import sys

    assert __name__ == "tests.test_support"
    shadow = sys.modules.get("kernels")
    assert shadow is None or "tests" not in Path(shadow.__file__ or "").parts
