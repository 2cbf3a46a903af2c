"""Running the checks: :func:`check_connection` (all at once, one report) and
:func:`conformance_cases` (one callable per check, for ``pytest.mark.parametrize``)."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass

import torch

from .checks import CHECKS
from .report import FAILED, PASSED, SKIPPED, CheckFailed, CheckResult, CheckSkipped, ConformanceReport
from .subject import Subject, default_num_streams, resolve

MAX_DETAIL = 600  # characters of an unexpected exception's message kept in a report


def _subject(cls_or_kind, num_streams: int | None, dim: int, options: dict | None, seed: int) -> Subject:
    cls = resolve(cls_or_kind)
    options = dict(options or {})
    if num_streams is None:
        num_streams = default_num_streams(cls, dim, options)
    return Subject(cls, num_streams, dim, options, seed)


def _selected(checks: Iterable[str] | None) -> tuple[str, ...]:
    if checks is None:
        return tuple(CHECKS)
    if isinstance(checks, str):
        checks = (checks,)
    checks = tuple(checks)
    unknown = [c for c in checks if c not in CHECKS]
    if unknown:
        raise ValueError(f"unknown check(s) {', '.join(unknown)}; choose from {', '.join(CHECKS)}")
    return checks


def run_check(subject: Subject, name: str) -> CheckResult:
    """Run one check; any exception it raises other than skip is a failure naming it."""
    start = time.perf_counter()
    try:
        with torch.random.fork_rng(devices=[]), torch.enable_grad():
            detail, status = CHECKS[name](subject), PASSED
    except CheckSkipped as skip:
        detail, status = str(skip), SKIPPED
    except CheckFailed as fail:
        detail, status = str(fail), FAILED
    except Exception as err:  # noqa: BLE001 (a check that crashes is a failed property, reported)
        message = " ".join(str(err).split())
        if len(message) > MAX_DETAIL:
            message = message[:MAX_DETAIL] + " ..."
        detail, status = f"raised {type(err).__name__}: {message}", FAILED
    return CheckResult(name, status, detail, time.perf_counter() - start)


def check_connection(
    cls_or_kind,
    num_streams: int | None = None,
    dim: int = 8,
    *,
    options: dict | None = None,
    checks: Iterable[str] | None = None,
    seed: int = 0,
    raise_on_failure: bool = True,
) -> ConformanceReport:
    """Run the conformance checks on a connection kind and return a :class:`ConformanceReport`.

    ``cls_or_kind``: a :class:`~hyperconn.HyperConnection` subclass, or a kind name / import path
    (``"package.module:Class"``). ``num_streams``: default the first of 4, 3, 2, 8, 1 the class
    accepts. ``options``: keyword options passed to every build (``eps=...``). ``checks``: names
    from :data:`~hyperconn.testing.CHECKS` (default all; ``FAST_CHECKS`` leaves out
    ``torch.compile``). ``seed`` fixes the random parameters and inputs.

    Raises :class:`ConformanceError` (an ``AssertionError``) naming every failed check and what it
    measured, unless ``raise_on_failure=False``. Skipped checks (not applicable, or no C++
    compiler for ``compile``) are listed in the report with the reason.
    """
    subject = _subject(cls_or_kind, num_streams, dim, options, seed)
    report = ConformanceReport(subject.kind, subject.cls, subject.num_streams, subject.dim, subject.options)
    for name in _selected(checks):
        report.results.append(run_check(subject, name))
    return report.raise_for_failures() if raise_on_failure else report


@dataclass(frozen=True)
class ConformanceCase:
    """One check on one kind, callable with no arguments: raises :class:`ConformanceError` if the
    check fails, calls ``pytest.skip`` (when pytest is running) if it does not apply, and returns
    the :class:`CheckResult`. ``str(case)`` is an id such as ``"orthogonal-n4-gradcheck"``;
    ``slow`` is True for the checks of :data:`SLOW_CHECKS`."""

    subject: Subject
    check: str

    @property
    def id(self) -> str:
        return f"{self.subject.kind}-n{self.subject.num_streams}-{self.check}"

    @property
    def slow(self) -> bool:
        from .checks import SLOW_CHECKS

        return self.check in SLOW_CHECKS

    def __str__(self) -> str:
        return self.id

    def __call__(self) -> CheckResult:
        s = self.subject
        report = ConformanceReport(s.kind, s.cls, s.num_streams, s.dim, s.options, [run_check(s, self.check)])
        report.raise_for_failures()
        result = report.results[0]
        if result.status == SKIPPED and "pytest" in sys.modules:
            sys.modules["pytest"].skip(f"{self.id}: {result.detail}")
        return result


def conformance_cases(
    cls_or_kind,
    num_streams: int | None = None,
    dim: int = 8,
    *,
    options: dict | None = None,
    checks: Iterable[str] | None = None,
    seed: int = 0,
) -> list[ConformanceCase]:
    """The checks of :func:`check_connection` as one :class:`ConformanceCase` each, to
    parametrize a test over (each check passes, fails or skips on its own)::

        @pytest.mark.parametrize("case", conformance_cases(MyKind), ids=str)
        def test_my_kind_conforms(case):
            case()
    """
    subject = _subject(cls_or_kind, num_streams, dim, options, seed)
    return [ConformanceCase(subject, name) for name in _selected(checks)]
