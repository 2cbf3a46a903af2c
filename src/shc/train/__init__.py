"""Training: config, loop, checkpoints, logging, distributed wrapping, and the CLI commands."""

from .config import TrainConfig, TrainSettings, build_config, load_config
from .metrics import read_metrics
from .trainer import NonFiniteLossError, Trainer, evaluate, is_finished, load_run, train, validation_loss

__all__ = [
    "NonFiniteLossError",
    "TrainConfig",
    "TrainSettings",
    "Trainer",
    "build_config",
    "evaluate",
    "is_finished",
    "load_config",
    "load_run",
    "read_metrics",
    "train",
    "validation_loss",
]
