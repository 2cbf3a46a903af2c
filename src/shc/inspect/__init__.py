"""Inspection of hyper-connections: pure diagnostics of mixing matrices and a recorder of
connection calls. Depends on torch and ``shc.connections`` only, so the trainer and the
run-level analysis (``shc.analysis``) share one definition of each metric."""

from . import diagnostics
from .recorder import Call, MixingRecorder, hyper_connections, mhc_logits

__all__ = ["Call", "MixingRecorder", "diagnostics", "hyper_connections", "mhc_logits"]
