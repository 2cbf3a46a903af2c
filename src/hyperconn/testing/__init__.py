"""The conformance kit: does a connection kind keep the promises every kind must keep?

Run it on your own kind (a :class:`~hyperconn.HyperConnection` subclass) or a built-in one::

    from hyperconn.testing import check_connection
    report = check_connection(MyKind)            # raises ConformanceError naming each failure
    print(report)                                # passed / failed / skipped, with what was measured

or, in pytest, one test per check::

    from hyperconn.testing import conformance_cases

    @pytest.mark.parametrize("case", conformance_cases(MyKind), ids=str)
    def test_my_kind_conforms(case):
        case()

The checks (:data:`CHECKS`, in order): ``invariants`` (the declared ones hold in float64 for
random inputs and parameters), ``init`` (``H_res`` at init equals ``initial_res()``),
``formula`` (forward and every gradient equal autograd of the formula built from ``mixing``),
``gradcheck`` (finite differences), ``gradients`` (every parameter gets a finite gradient: DDP),
``autocast`` (float32 streams exact under bf16 autocast), ``no_grad`` (the decode path equals the
grad path), ``recompute``, ``meta_build`` (meta device + ``reset_parameters`` equals a plain
build), ``state_dict`` (round trip) and ``compile`` (``torch.compile(fullgraph=True)``, slow).
docs/conformance.md explains each one and how to read a failure.
"""

from __future__ import annotations

from .checks import CHECKS, FAST_CHECKS, SLOW_CHECKS
from .report import CheckResult, ConformanceError, ConformanceReport
from .runner import ConformanceCase, check_connection, conformance_cases

__all__ = [
    "CHECKS",
    "FAST_CHECKS",
    "SLOW_CHECKS",
    "CheckResult",
    "ConformanceCase",
    "ConformanceError",
    "ConformanceReport",
    "check_connection",
    "conformance_cases",
]
