"""Diagnostics of hyper-connections: pure metrics of mixing matrices (``metrics``) and a recorder
of connection calls (``MixingRecorder``). Depends on torch and ``hyperconn.connections`` only, so the
trainer and the run-level analysis (``hyperconn.analysis``) share one definition of each metric."""

from . import metrics
from .recorder import Call, MixingRecorder, hyper_connections, mhc_logits

__all__ = ["Call", "MixingRecorder", "hyper_connections", "metrics", "mhc_logits"]
