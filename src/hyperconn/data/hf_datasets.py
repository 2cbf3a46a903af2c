"""Loading the dataset an ``hf:<name or path>`` source names (HF ``datasets``, imported on use).

A name that is not a local path is loaded from the Hub; a local path may be a ``save_to_disk``
folder (a ``DatasetDict`` is indexed by the split), a single ``.json/.jsonl/.parquet/.csv/.txt``
file (read with the builder of its suffix), or a dataset folder with a loading script or data files.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .paths import resolve_path

if TYPE_CHECKING:
    from .sources import HFSource

HF_FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv", ".txt": "text"}
_SAVED_DATASET_MARKERS = ("dataset_dict.json", "state.json", "dataset_info.json")


def local_fingerprint(path: Path) -> list:
    """``[relative name, size, mtime_ns]`` of the file or of every file under the folder ``path``
    (what identifies a local dataset in cache keys, without reading it)."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return [[p.relative_to(path.parent).as_posix(), p.stat().st_size, p.stat().st_mtime_ns] for p in files]


def load_hf_dataset(source: HFSource):
    """The ``datasets.Dataset`` (or ``IterableDataset`` when ``source.streaming``) of split
    ``source.split``."""
    import datasets

    name, split, streaming = source.name, source.split, source.streaming
    local = resolve_path(name)
    if not local.exists():
        try:
            return datasets.load_dataset(name, source.config, split=split, streaming=streaming)
        except FileNotFoundError:
            raise
        except OSError as err:  # e.g. the Hub cannot be reached
            raise ValueError(f"source={str(source)!r}: cannot load the dataset from the Hub ({err})") from err
    cache = str(resolve_path(source.cache_dir) / "hf_datasets")
    if local.is_dir() and any((local / m).exists() for m in _SAVED_DATASET_MARKERS):
        ds = datasets.load_from_disk(str(local))
        if isinstance(ds, datasets.DatasetDict):
            if split not in ds:
                raise ValueError(f"hf_split={split!r}: the dataset at {local} has splits {sorted(ds)}")
            ds = ds[split]
        return ds.to_iterable_dataset() if streaming else ds
    if local.is_file():
        builder = HF_FILE_BUILDERS.get(local.suffix.lower())
        if builder is None:
            raise ValueError(
                f"source={str(source)!r}: cannot read {local.suffix!r} files; use one of {sorted(HF_FILE_BUILDERS)}"
            )
        return datasets.load_dataset(
            builder, data_files={split: str(local)}, split=split, streaming=streaming, cache_dir=cache
        )
    return datasets.load_dataset(str(local), source.config, split=split, streaming=streaming, cache_dir=cache)
