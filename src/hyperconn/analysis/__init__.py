"""Diagnostics of the mixing matrices, their capture from a model, reports and comparisons."""
