"""Optional dependencies: import a module that lives in one of the package's extras.

The core (``hyperconn.connections``, ``hyperconn.linalg``) needs torch alone; the trainer, data pipeline,
analysis, Hugging Face bridge and benchmarks need extras. :func:`require` imports a module or
raises an ``ImportError`` that names the extra to install, instead of a bare ``ModuleNotFoundError``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

# which extra provides each optional top-level module
EXTRA_OF: dict[str, str] = {
    "yaml": "train",
    "safetensors": "train",
    "tokenizers": "train",
    "tqdm": "train",
    "tensorboard": "train",
    "numpy": "train",
    "datasets": "train",
    "transformers": "hf",
    "matplotlib": "analysis",
    "hyper_connections": "bench",
    "triton": "triton",
}


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message names the extra that provides it."""


def require(module: str, purpose: str | None = None) -> ModuleType:
    """Import ``module`` (dotted names allowed) or raise :class:`MissingExtraError`.

    ``purpose`` says what needed it ("hyperconn train", "plots"...) and goes into the message."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        top = module.split(".")[0]
        if err.name is not None and err.name.split(".")[0] != top:
            raise  # the module exists but one of ITS imports is missing: not ours to explain
        extra = EXTRA_OF.get(top)
        what = f" (needed for {purpose})" if purpose else ""
        hint = f"pip install 'hyperconn[{extra}]'" if extra else f"pip install {top}"
        raise MissingExtraError(f"{top} is not installed{what}; install it with: {hint}") from err
