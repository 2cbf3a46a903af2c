"""Training: config, loop, checkpoints, run directory, logging, data parallelism (DDP/FSDP2), CLI commands."""

from .config import TrainConfig, TrainSettings, build_config, load_config
from .evaluation import ValResult, evaluate_loss, validation_loss
from .loss import lm_loss
from .metrics import read_metrics
from .provenance import read_provenance
from .rundir import is_finished, read_done
from .runs import evaluate, load_run
from .trainer import NonFiniteLossError, Trainer, train

__all__ = [
    "NonFiniteLossError",
    "TrainConfig",
    "TrainSettings",
    "Trainer",
    "ValResult",
    "build_config",
    "evaluate",
    "evaluate_loss",
    "is_finished",
    "lm_loss",
    "load_config",
    "load_run",
    "read_done",
    "read_metrics",
    "read_provenance",
    "train",
    "validation_loss",
]
