"""Training: config, loop, checkpoints, run directory, logging, distributed wrapping, CLI commands."""

from .config import TrainConfig, TrainSettings, build_config, load_config
from .evaluation import validation_loss
from .loss import lm_loss
from .metrics import read_metrics
from .rundir import is_finished
from .runs import evaluate, load_run
from .trainer import NonFiniteLossError, Trainer, train

__all__ = [
    "NonFiniteLossError",
    "TrainConfig",
    "TrainSettings",
    "Trainer",
    "build_config",
    "evaluate",
    "is_finished",
    "lm_loss",
    "load_config",
    "load_run",
    "read_metrics",
    "train",
    "validation_loss",
]
