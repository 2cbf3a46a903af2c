"""The naive reference of the layer benchmark: :mod:`hyperconn.connections.reference`, re-exported."""

from ..connections.reference import naive_forward, naive_mixing

__all__ = ["naive_forward", "naive_mixing"]
