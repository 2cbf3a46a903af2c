"""The conformance kit (hyperconn.testing): every built-in kind passes it, and a kind broken in
one way fails the check of that property, with a message naming it and what was measured."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import hyperconn
from hyperconn.connections.base import CoefficientConnection, InferenceMixing
from hyperconn.testing import (
    CHECKS,
    FAST_CHECKS,
    SLOW_CHECKS,
    ConformanceError,
    check_connection,
    conformance_cases,
)
from hyperconn.testing import checks as checks_module

KINDS = hyperconn.available_connections()
# stream counts beyond each kind's default (4; residual 1) that it accepts, for the slow sweep
OTHER_STREAMS = {"hc": (2, 3, 8), "mhc": (2, 3, 8), "mhc_lite": (2, 3), "kromhc": (2, 8), "shc": (2, 3, 8),
                 "identity": (2, 3), "orthogonal": (2, 3, 5)}  # fmt: skip


def _case_param(case):
    return pytest.param(case, id=case.id, marks=pytest.mark.slow if case.slow else ())


# the compile check (7-53 s a kind) for two kinds here; every kind's fullgraph compile is also in
# tests/connections/test_api.py, which this suite runs anyway
COMPILED_KINDS = ("shc", "orthogonal")
BUILTIN_CASES = [
    _case_param(case) for kind in KINDS for case in conformance_cases(kind)
    if case.check not in SLOW_CHECKS or kind in COMPILED_KINDS
]


@pytest.mark.parametrize("case", BUILTIN_CASES)
def test_builtin_kind_passes(case):
    result = case()  # raises ConformanceError on failure, pytest.skip where the check does not apply
    assert result.status == "passed", result


@pytest.mark.slow
@pytest.mark.parametrize("kind,n", [(k, n) for k, ns in OTHER_STREAMS.items() for n in ns])
def test_builtin_kind_passes_at_other_stream_counts(kind, n):
    report = check_connection(kind, n, checks=FAST_CHECKS)
    assert report.ok and len(report.passed) >= len(FAST_CHECKS) - 2, report


def test_default_stream_counts_and_what_is_skipped():
    """The first of 4, 3, 2, 8, 1 the class accepts; skips name their reason."""
    assert [c.subject.num_streams for c in conformance_cases("residual", checks=["init"])] == [1]
    assert conformance_cases("kromhc", checks=["init"])[0].subject.num_streams == 4
    report = check_connection("hc", checks=["invariants", "init"])
    assert report.skipped == ["invariants"] and report.passed == ["init"]
    assert "declares no invariants" in report.result("invariants").detail
    assert "initial_res() is None" in check_connection("mhc", checks=["init"]).result("init").detail


# --- kinds written outside the library: one that conforms, and each broken in one way -------------


class RowSoftmax(CoefficientConnection):
    """A correct kind: ``H_res = softmax`` over each row of ``n^2`` logits (rows sum to one, >= 0),
    ``J`` at init (zero logits)."""

    kind = "row_softmax"
    invariants = ("rows_sum_to_one", "nonnegative")

    def __init__(self, num_streams, dim, layer_index=0, eps=1e-6, recompute=False, backend="auto"):
        super().__init__(num_streams, dim, layer_index, eps, recompute, backend)
        self.reset_parameters()

    def initial_res(self):
        n = self.num_streams
        return torch.full((n, n), 1.0 / n, dtype=torch.float64)

    def res_groups(self):
        return (self.num_streams**2,)

    def res_bias(self):
        return torch.zeros(self.num_streams**2)

    def res_matrix(self, coefs):
        n = self.num_streams
        return torch.softmax(coefs[0].unflatten(-1, (n, n)), dim=-1)


class ColumnsNotRows(RowSoftmax):
    kind = "columns_not_rows"

    def res_matrix(self, coefs):  # softmax over the columns: the declared row sums do not hold
        n = self.num_streams
        return torch.softmax(coefs[0].unflatten(-1, (n, n)), dim=-2)


class LyingInit(RowSoftmax):
    kind = "lying_init"

    def initial_res(self):  # H_res starts at J, not I
        return torch.eye(self.num_streams, dtype=torch.float64)


class UnusedParameter(RowSoftmax):
    kind = "unused_parameter"

    def __init__(self, num_streams, dim, layer_index=0, **options):
        super().__init__(num_streams, dim, layer_index, **options)
        self.temperature = nn.Parameter(torch.ones(1))  # never read by forward

    def reset_parameters(self):
        super().reset_parameters()
        if hasattr(self, "temperature"):
            with torch.no_grad():
                self.temperature.fill_(1.0)


class WrongNoGradPath(RowSoftmax):
    kind = "wrong_no_grad"

    def inference_mixing(self, streams):  # H_res instead of H_res^T in the decode GEMM
        pre, res, post = self.mixing(streams)
        return InferenceMixing(self.width_matrix(pre, res.transpose(-1, -2)), post.unsqueeze(-1))


class IncompleteReset(RowSoftmax):
    kind = "incomplete_reset"

    def __init__(self, num_streams, dim, layer_index=0, **options):
        super().__init__(num_streams, dim, layer_index, **options)
        self.temperature = nn.Parameter(torch.ones(1))  # set here, but not by reset_parameters

    def res_matrix(self, coefs):
        n = self.num_streams
        return torch.softmax(coefs[0].unflatten(-1, (n, n)) * self.temperature, dim=-1)


class _DoubledGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, t):
        return t.clone()

    @staticmethod
    def backward(ctx, grad):
        return 2 * grad


class WrongBackward(RowSoftmax):
    kind = "wrong_backward"

    def res_matrix(self, coefs):
        return _DoubledGrad.apply(super().res_matrix(coefs))


class WrongDepth(RowSoftmax):
    kind = "wrong_depth"

    def depth(self, mixed, h_post, branch_out):  # half of H_post: forward is not mixing's formula
        return super().depth(mixed, h_post / 2, branch_out)


class Bf16Mixing(RowSoftmax):
    kind = "bf16_mixing"

    def width_fast(self, streams):  # the mixing GEMM left to autocast: bf16 under bf16 autocast
        pre, res, post = self.mixing(streams)
        u = torch.matmul(pre.unsqueeze(-2), streams).squeeze(-2)
        return u.to(streams.dtype), torch.matmul(res.transpose(-1, -2), streams).to(streams.dtype), post


class RecomputeDiffers(RowSoftmax):
    kind = "recompute_differs"

    def res_matrix(self, coefs):  # sharper logits when built with recompute=True
        n, sharpen = self.num_streams, 2.0 if self.recompute else 1.0
        return torch.softmax(coefs[0].unflatten(-1, (n, n)) * sharpen, dim=-1)


class GraphBreak(RowSoftmax):
    kind = "graph_break"

    def res_matrix(self, coefs):
        torch._dynamo.graph_break()
        return super().res_matrix(coefs)


def test_a_correct_kind_of_your_own_passes():
    report = check_connection(RowSoftmax, 2, checks=FAST_CHECKS)
    assert report.ok and report.skipped == [] and report.passed == list(FAST_CHECKS), report
    assert "rows_sum_to_one" in report.result("invariants").detail


BROKEN = [
    (ColumnsNotRows, "invariants", r"rows_sum_to_one \(H 1 = 1\): max violation = [\d.e-]+ > 1e-10"),
    (LyingInit, "init", r"max \|H_res - initial_res\(\)\| = 0\.5 > 1e-12"),
    (UnusedParameter, "gradients", r"no gradient for parameter\(s\) temperature"),
    (WrongNoGradPath, "no_grad", r"forward under no_grad \(1, 1\) differs from the grad path"),
    (IncompleteReset, "meta_build", r"temperature after to_empty \+ reset_parameters .*NaN"),
    (WrongBackward, "gradcheck", r"backward differs from finite differences: Jacobian mismatch"),
    (WrongDepth, "formula", r"forward differs from the mixing formula's"),
    (Bf16Mixing, "autocast", r"output under bf16 autocast differs from float32: relative error"),
    (RecomputeDiffers, "recompute", r"forward with recompute=True differs: max error [\d.e-]+ > 1e-12"),
]


@pytest.mark.parametrize("cls,check,words", BROKEN, ids=[cls.kind for cls, _, _ in BROKEN])
def test_a_broken_kind_fails_the_check_of_its_property(cls, check, words):
    with pytest.raises(ConformanceError) as caught:
        check_connection(cls, 2, checks=FAST_CHECKS)  # n = 2: a small gradcheck
    report = caught.value.report
    assert check in report.failed, report
    message = str(caught.value)
    assert isinstance(caught.value, AssertionError)
    assert message.startswith(f"{cls.kind} (") and f"\n  {check}: " in message, message
    assert re.search(words, message), message
    # the break is local: the checks that do not depend on it still pass
    assert set(report.failed) <= {check, "no_grad"}, report  # a wrong depth shows on both paths


def test_a_pytest_case_raises_for_its_own_check_only():
    gradients, invariants = conformance_cases(UnusedParameter, checks=["gradients", "invariants"])
    assert str(gradients) == "unused_parameter-n4-gradients" and not gradients.slow
    with pytest.raises(ConformanceError, match="gradients: no gradient for parameter"):
        gradients()
    assert invariants().status == "passed"


def test_report_without_raising_lists_every_check():
    report = check_connection(ColumnsNotRows, 3, checks=["invariants", "init", "recompute"], raise_on_failure=False)
    assert (report.failed, report.passed, report.num_streams) == (["invariants"], ["init", "recompute"], 3)
    text = str(report)
    assert "2 passed, 1 failed, 0 skipped" in text and "failed  invariants: rows_sum_to_one" in text


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="unknown check.*nope"):
        check_connection("mhc", checks=["nope"])
    with pytest.raises(TypeError, match="HyperConnection subclass"):
        check_connection(nn.Linear)

    class OnlyThree(RowSoftmax):
        kind = "only_three"

        def __init__(self, num_streams, dim, layer_index=0, **options):
            if num_streams != 3:
                raise ValueError("only_three: num_streams must be 3")
            super().__init__(num_streams, dim, layer_index, **options)

    assert check_connection(OnlyThree, checks=["invariants"]).num_streams == 3


def test_compile_is_skipped_with_its_reason_without_a_compiler(monkeypatch):
    monkeypatch.setattr(checks_module, "compiler_available", lambda: None)
    report = check_connection("shc", checks=["compile"])
    assert report.skipped == ["compile"] and "no C++ compiler" in report.result("compile").detail
    assert SLOW_CHECKS == ("compile",) and set(FAST_CHECKS) | set(SLOW_CHECKS) == set(CHECKS)


@pytest.mark.slow
def test_a_graph_break_fails_the_compile_check():
    if checks_module.compiler_available() is None:
        pytest.skip("no C++ compiler")
    with pytest.raises(ConformanceError, match="compile: raised"):
        check_connection(GraphBreak, checks=["compile"])


@pytest.mark.slow
def test_the_kit_needs_torch_only():
    """Importing hyperconn.testing imports neither pytest nor the training code."""
    code = ("import sys, hyperconn.testing; "
            "print(sorted(m for m in sys.modules if m == 'pytest' or m.startswith('hyperconn.train')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    src = Path(hyperconn.testing.__file__).parent
    assert not any(re.search(r"^(import|from) pytest", p.read_text(), re.MULTILINE) for p in src.glob("*.py"))
