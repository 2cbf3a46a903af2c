"""What the conformance kit found: one :class:`CheckResult` per check, a :class:`ConformanceReport`
over all of them, and :class:`ConformanceError` (an ``AssertionError``) naming every failure."""

from __future__ import annotations

from dataclasses import dataclass, field

PASSED, FAILED, SKIPPED = "passed", "failed", "skipped"


class CheckFailed(AssertionError):
    """Raised inside a check: the property does not hold (the message says what was measured)."""


class CheckSkipped(Exception):
    """Raised inside a check: it does not apply here (the message says why)."""


@dataclass(frozen=True)
class CheckResult:
    """One check's outcome: ``status`` is ``"passed"``, ``"failed"`` or ``"skipped"``; ``detail`` is
    what was measured (passed), what broke (failed) or why it did not run (skipped)."""

    check: str
    status: str
    detail: str = ""
    seconds: float = 0.0

    def __str__(self) -> str:
        detail = f": {self.detail}" if self.detail else ""
        return f"{self.status:7s} {self.check}{detail}"


@dataclass
class ConformanceReport:
    """Every check run on one kind: ``kind``, the class, ``num_streams``, ``dim``, ``options`` and
    ``results`` in the order they ran. ``passed`` / ``failed`` / ``skipped`` list check names."""

    kind: str
    cls: type
    num_streams: int
    dim: int
    options: dict
    results: list[CheckResult] = field(default_factory=list)

    def _names(self, status: str) -> list[str]:
        return [r.check for r in self.results if r.status == status]

    @property
    def passed(self) -> list[str]:
        return self._names(PASSED)

    @property
    def failed(self) -> list[str]:
        return self._names(FAILED)

    @property
    def skipped(self) -> list[str]:
        return self._names(SKIPPED)

    @property
    def ok(self) -> bool:
        """No check failed (skipped checks do not count against it)."""
        return not self.failed

    def result(self, check: str) -> CheckResult:
        """The result of ``check`` (``KeyError`` if it did not run)."""
        for r in self.results:
            if r.check == check:
                return r
        raise KeyError(f"check {check!r} did not run; ran {', '.join(r.check for r in self.results)}")

    @property
    def subject(self) -> str:
        opts = "".join(f", {k}={v!r}" for k, v in self.options.items())
        return f"{self.kind} ({self.cls.__module__}.{self.cls.__qualname__}, num_streams={self.num_streams}, " \
               f"dim={self.dim}{opts})"

    def __str__(self) -> str:
        head = f"conformance of {self.subject}: {len(self.passed)} passed, {len(self.failed)} failed, " \
               f"{len(self.skipped)} skipped"
        return "\n".join([head, *(f"  {r}" for r in self.results)])

    def raise_for_failures(self) -> ConformanceReport:
        """Raise :class:`ConformanceError` if any check failed; return the report otherwise."""
        if self.failed:
            raise ConformanceError(self)
        return self


class ConformanceError(AssertionError):
    """A kind failed one or more checks. The message names each failed check and what was
    measured; ``report`` is the full :class:`ConformanceReport`."""

    def __init__(self, report: ConformanceReport) -> None:
        self.report = report
        failures = [r for r in report.results if r.status == FAILED]
        lines = [f"{report.subject} fails {len(failures)} conformance check(s): "
                 f"{', '.join(r.check for r in failures)}"]
        lines += [f"  {r.check}: {r.detail}" for r in failures]
        super().__init__("\n".join(lines))
