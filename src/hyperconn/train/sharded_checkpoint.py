"""Sharded checkpoints (``train.checkpoint_format=sharded``): every rank writes its own shards with
``torch.distributed.checkpoint`` (DCP), and any layout reads them back.

Layout of ``checkpoints/step_<k>/``::

    trainer.pt      step, RNG states, precision and the layout that wrote it (rank 0; plain tensors)
    sharded/        DCP: .metadata + one __<rank>_0.distcp per writing rank, holding
                    {"model": model state, "optim": optimizer state}, keyed by parameter name

The state dicts are ``torch.distributed.checkpoint.state_dict``'s: parameter names (the plain
model's ``state_dict()`` keys) with DTensor values under FSDP2 / tensor parallelism, plain tensors
otherwise; a pipeline stage holds only its own blocks' keys. DCP stores each tensor once with its
global shape and reshards on load, so a checkpoint written by one layout (FSDP2 on 2 ranks, TP 2,
PP 2, DDP, one process) loads into any other: every rank asks for what it holds now.

The guarantees of the full format hold:

- atomic publish: the ranks write into one temporary folder (named by rank 0), then rank 0 adds
  ``trainer.pt``, fsyncs and renames it into place (``hyperconn.fileio.publish_dir``), so a kill
  at any instant leaves either no ``step_<k>`` or a complete one;
- a corrupt or incomplete newest checkpoint is skipped with the reason (:func:`read_sharded`
  checks ``trainer.pt``, the DCP metadata and its shapes; a shard that fails to read during the
  load is reported by DCP on every rank, and the next older checkpoint is tried);
- nothing runs pickle code: ``trainer.pt`` is read with ``weights_only=True``, and DCP's
  ``.metadata`` pickle through an unpickler that admits only DCP's metadata classes
  (:class:`SafeReader`); the shards hold raw tensor bytes.
"""

from __future__ import annotations

import pickle
import shutil
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from ..fileio import fsync_file, publish_dir, temp_name
from .checkpoint import FORMAT, STATE, checkpoint_dir, list_checkpoints, rng_state, step_of

SHARDED = "sharded"


def is_sharded(path: Path) -> bool:
    return (Path(path) / SHARDED).is_dir()


# --- reading DCP metadata without running arbitrary pickle code ----------------------------------

_ALLOWED_MODULES = ("torch.distributed.checkpoint.metadata", "torch.distributed.checkpoint.filesystem")
_ALLOWED = {
    ("torch", "Size"),
    ("collections", "OrderedDict"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("builtins", "slice"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch.storage", "_load_from_bytes"),
    ("torch.serialization", "_get_layout"),
    ("pathlib", "PosixPath"),
    ("pathlib", "PurePosixPath"),
}


class _MetadataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if module in _ALLOWED_MODULES or (module, name) in _ALLOWED:
            return super().find_class(module, name)
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        if module == "torch.distributed.checkpoint.planner" and name in ("LoadItemType", "WriteItemType"):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"DCP metadata names {module}.{name}, which a checkpoint never holds")


def _reader(path: Path):
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.metadata import StorageMeta

    class SafeReader(FileSystemReader):
        """``FileSystemReader`` whose metadata is unpickled by :class:`_MetadataUnpickler`."""

        def read_metadata(self, *args, **kwargs):
            with open(Path(self.path) / ".metadata", "rb") as f:
                metadata = _MetadataUnpickler(f).load()
            if getattr(metadata, "storage_meta", None) is None:
                metadata.storage_meta = StorageMeta()
            metadata.storage_meta.load_id = self.load_id
            return metadata

    return SafeReader(str(path))


# --- write ---------------------------------------------------------------------------------------


def _state(model: nn.Module, optimizer: torch.optim.Optimizer | None) -> dict:
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    state = {"model": get_model_state_dict(model)}
    if optimizer is not None:
        state["optim"] = get_optimizer_state_dict(model, optimizer, options=_OPTIONS())
    return state


def _OPTIONS():  # noqa: N802
    """Optimizer state keyed per parameter name (``optim.state.<name>.exp_avg``,
    ``optim.param_groups.<name>.lr``): a pipeline stage's groups list only its own parameters, so
    a nested ``param_groups`` list would differ between ranks."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(flatten_optimizer_state_dict=True)


@contextmanager
def _one_process_quiet():
    """DCP warns that it assumes one process when there is no process group: that is intended."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def _broadcast(value, src: int = 0):
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def save_sharded(
    run_dir: Path, step: int, model: nn.Module, optimizer: torch.optim.Optimizer, meta: dict, keep: int = 2
) -> Path:
    """Publish ``checkpoints/step_<step>`` (module doc); every rank calls it (a collective).
    ``model`` is the unwrapped model (sharded in place, or a pipeline stage's part)."""
    import torch.distributed.checkpoint as dcp

    rank = dist.get_rank() if dist.is_initialized() else 0
    final = checkpoint_dir(run_dir) / f"step_{step:08d}"
    tmp = None
    if rank == 0:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_name(final)
        (tmp / SHARDED).mkdir(parents=True)
    tmp = Path(_broadcast(str(tmp) if tmp else None))
    try:
        with _one_process_quiet():
            dcp.save(_state(model, optimizer), checkpoint_id=str(tmp / SHARDED))  # fsyncs each file
        if rank == 0:
            state = {**meta, "format": FORMAT, "checkpoint_format": "sharded", "step": step, "rng": rng_state()}
            torch.save(state, tmp / STATE)
            fsync_file(tmp / STATE)
            publish_dir(tmp, final)
            for old in list_checkpoints(run_dir)[:-keep]:
                shutil.rmtree(old, ignore_errors=True)
    finally:
        if rank == 0 and tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    _barrier()
    return final


# --- read ----------------------------------------------------------------------------------------


def read_sharded(path: Path, expected: dict[str, tuple] | None = None) -> dict:
    """The trainer state of sharded checkpoint ``path``; ValueError naming what is missing, corrupt
    or inconsistent. ``expected``: ``{name: shape}`` of the whole model (every key must be there
    with that global shape)."""
    path = Path(path)
    state_file = path / STATE
    if not state_file.is_file():
        raise ValueError(f"checkpoint {path} is incomplete: {STATE} is missing")
    try:
        state = torch.load(state_file, map_location="cpu", weights_only=True)
    except Exception as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"checkpoint {path} is corrupt: cannot read {STATE} as plain tensors ({reason})") from err
    if not isinstance(state, dict) or state.get("format") != FORMAT or state.get("checkpoint_format") != "sharded":
        raise ValueError(f"checkpoint {path}: {STATE} is not a sharded checkpoint's trainer state of format {FORMAT}")
    if state.get("step") != step_of(path):
        raise ValueError(
            f"checkpoint {path} is inconsistent: folder says step {step_of(path)}, {STATE} {state.get('step')}"
        )
    if not isinstance(state.get("rng"), dict):
        raise ValueError(f"checkpoint {path}: {STATE} has no rng state")
    metadata = read_metadata(path)
    if expected is not None:
        check_shapes(path, metadata, expected)
    return state


def read_metadata(path: Path):
    meta_file = Path(path) / SHARDED / ".metadata"
    if not meta_file.is_file():
        raise ValueError(f"checkpoint {path} is incomplete: {SHARDED}/.metadata is missing")
    try:
        return _reader(Path(path) / SHARDED).read_metadata()
    except Exception as err:
        raise ValueError(f"checkpoint {path} is corrupt: cannot read {SHARDED}/.metadata ({err})") from err


def check_shapes(path: Path, metadata, expected: dict[str, tuple]) -> None:
    saved = {
        k[len("model.") :]: tuple(v.size)
        for k, v in metadata.state_dict_metadata.items()
        if k.startswith("model.") and hasattr(v, "size")
    }
    missing = sorted(set(expected) - set(saved))
    unexpected = sorted(set(saved) - set(expected))
    wrong = sorted(k for k in set(expected) & set(saved) if tuple(expected[k]) != saved[k])
    if missing or unexpected or wrong:
        parts = [f"missing {', '.join(missing[:5])}"] if missing else []
        parts += [f"unexpected {', '.join(unexpected[:5])}"] if unexpected else []
        if wrong:
            parts.append(f"shape of {wrong[0]} is {saved[wrong[0]]}, the model has {tuple(expected[wrong[0]])}")
        raise ValueError(f"checkpoint {path} does not match the model config: {'; '.join(parts)}")
    if not any(k.startswith("optim.") for k in metadata.state_dict_metadata):
        raise ValueError(f"checkpoint {path} holds no optimizer state")


def load_sharded(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Load the weights and optimizer state into ``model`` / ``optimizer`` in this layout (every
    rank calls it); ValueError (on every rank) if a shard cannot be read."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

    state = _state(model, optimizer)
    try:
        with _one_process_quiet():
            dcp.load(state, storage_reader=_reader(Path(path) / SHARDED))
    except (Exception, _checkpoint_exception()) as err:  # DCP raises CheckpointException on every rank
        first = _first_cause(err)
        raise ValueError(f"checkpoint {path} is corrupt: reading its shards failed ({first[:300]})") from err
    set_model_state_dict(model, state["model"])
    set_optimizer_state_dict(model, optimizer, state["optim"], options=_OPTIONS())


def _checkpoint_exception() -> type:
    """DCP's CheckpointException derives from BaseException, not Exception."""
    from torch.distributed.checkpoint.api import CheckpointException

    return CheckpointException


def _first_cause(err: BaseException) -> str:
    """The failing rank's own error (its last line: ``EOFError``, ...) rather than DCP's wrapper."""
    failures = getattr(err, "failures", None)
    if isinstance(failures, dict) and failures:
        rank, cause = next(iter(failures.items()))
        inner = cause[0] if isinstance(cause, tuple) else cause
        text = f"{type(inner).__name__}: {inner}".strip().rstrip(":")
        return f"rank {rank}: {text}"
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def consolidate(path: Path) -> dict[str, torch.Tensor]:
    """The full weights of sharded checkpoint ``path`` in this one process (no process group):
    ``{name: tensor}``, the plain model's ``state_dict()`` keys."""
    import torch.distributed.checkpoint as dcp

    metadata = read_metadata(path)
    weights = {}
    for key, item in metadata.state_dict_metadata.items():
        if key.startswith("model.") and hasattr(item, "size"):
            weights[key[len("model.") :]] = torch.empty(tuple(item.size), dtype=item.properties.dtype)
    try:
        with _one_process_quiet():
            dcp.load({"model": weights}, storage_reader=_reader(Path(path) / SHARDED), no_dist=True)
    except (Exception, _checkpoint_exception()) as err:
        first = _first_cause(err)
        raise ValueError(f"checkpoint {path} is corrupt: reading its shards failed ({first[:300]})") from err
    return weights
