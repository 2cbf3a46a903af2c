"""The run's components: its data (prepared and checked against the batch) and its model: built
plain on the CPU and moved to the device, converted from a Hugging Face checkpoint, or under FSDP
built sharded (``parallel.build_sharded``); then wrapped for the loop by ``parallel.DataParallel``.
"""

from __future__ import annotations

import torch
from torch import nn

from ..data import PreparedData, prepare_data
from ..data.batching import rank_slice
from ..model import LanguageModel
from ..model.compile import compile_blocks
from . import distributed as D
from .config import TrainConfig
from .parallel import DataParallel, build_sharded
from .parallel import check_shardable as check_shardable  # importable from here too


def prepare_run_data(cfg: TrainConfig, info: D.DistInfo) -> PreparedData:
    """Prepare the data (where it builds a shared cache, rank 0 builds it and the others then read
    it; shards and streams need no wait), fill in the vocabulary size, and check the splits hold a
    batch; ValueError naming what is too small."""
    t = cfg.train
    shared = cfg.data.rank0_builds_cache
    if shared and not info.is_main:
        D.barrier(info)
    data = prepare_data(cfg.data)
    if shared and info.is_main:
        D.barrier(info)
    vocab = data.tokenizer.vocab_size
    if cfg.model.vocab_size is None:
        cfg.model.vocab_size = vocab
    elif cfg.model.vocab_size < vocab:
        raise ValueError(
            f"model.vocab_size={cfg.model.vocab_size} is smaller than the tokenizer's vocabulary ({vocab} ids): "
            "raise model.vocab_size or leave it unset to take the tokenizer's"
        )
    need = t.batch_size * t.seq_len + 1
    # a stream (data.train is None) checks its rank's share as it reads (StreamingBatcher)
    lo, hi = (0, need) if data.train is None else rank_slice(int(data.train.shape[0]), info.rank, info.world_size)
    if hi - lo < need:
        share = f" (rank {info.rank}'s share of {info.world_size}: {hi - lo})" if info.distributed else ""
        raise ValueError(
            f"the training split has {data.train.shape[0]} tokens{share}, fewer than one batch of "
            f"train.batch_size x train.seq_len + 1 = {need}; use more data or a smaller batch"
        )
    val_need = t.seq_len + 1
    if data.n_val_tokens < val_need * info.world_size:
        raise ValueError(
            f"evaluation would see no batch: {data.n_val_tokens} validation tokens over {info.world_size} rank(s), "
            f"each needs at least train.seq_len + 1 = {val_need}; use more validation data or a shorter seq_len"
        )
    return data


def build_model(cfg: TrainConfig, parallel: DataParallel, layout=None) -> tuple[nn.Module, nn.Module]:
    """``(raw_model, model)``: the model on this rank's device with ``train.seed``'s initialisation
    (or ``train.init_from``'s weights), and ``parallel.wrap(raw_model)``, the module the loop calls
    (DDP around it, or the model itself: alone, or sharded in place under FSDP). Under a ``layout``
    with tensor or pipeline parallelism: that layout's build (``tensor_parallel``, ``pipeline``)."""
    device = parallel.info.device
    if layout is not None and layout.tp > 1:
        from .tensor_parallel import build_tensor_parallel

        return build_tensor_parallel(cfg, layout, device)
    if layout is not None and layout.pp > 1:
        from .pipeline import build_pipeline

        return build_pipeline(cfg, layout, device)
    if cfg.train.init_from is not None:  # the config refuses train.fsdp with it
        model = build_from_hf(cfg).to(device)
    elif parallel.sharded:
        model = build_sharded(cfg, parallel.info)
    else:
        model = build_plain(cfg, cfg.train.seed).to(device)
    return model, parallel.wrap(model)


def compiled_forward(raw_model: nn.Module, model: nn.Module, sharded: bool) -> nn.Module:
    """What the loop calls under ``train.compile=true``.

    A hyperconn ``LanguageModel`` that is not sharded is compiled block by block, in place
    (:func:`~hyperconn.model.compile.compile_blocks`: one graph per distinct block, so three when
    the inert first and last ``H_res`` are skipped), and the loop calls ``model`` as before (DDP
    around it, or the model itself). At ``small`` on the CPU that compiles in less than half the
    whole model's time, with the same step time (docs/performance.md, "Regional compile").
    Any other model (an HF one, an FSDP-sharded one) is compiled whole.

    On the CPU, Inductor writes C++: without a working compiler the run stops here, before it
    writes anything, with one ValueError line instead of a traceback at the first step."""
    param = next(raw_model.parameters(), None)
    if param is not None and param.device.type == "cpu":
        require_cpp_compiler()
    if isinstance(raw_model, LanguageModel) and not sharded:
        compile_blocks(raw_model)
        return model
    return torch.compile(model)


def require_cpp_compiler() -> None:
    """ValueError unless Inductor finds the C++ compiler it would use for CPU code (the check
    ``torch.compile`` itself makes at the first compiled step; skipped where this torch has none)."""
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler
        from torch._inductor.exc import InvalidCxxCompiler
    except ImportError:
        return
    try:
        get_cpp_compiler()
    except InvalidCxxCompiler as err:
        raise ValueError(
            f"train.compile=true on the CPU needs a C++ compiler for torch.compile ({err}): "
            "install one (g++ or clang++, or point CXX at it) or set train.compile=false"
        ) from None


def build_plain(cfg: TrainConfig, seed: int) -> LanguageModel:
    """The model on the CPU, initialised by ``reset_parameters()`` from the freshly seeded
    generator: the same draws, in the same order, as ``parallel.build_sharded`` makes."""
    model = LanguageModel(cfg.model)
    torch.manual_seed(seed)
    with torch.no_grad():
        model.reset_parameters()
    return model


def build_from_hf(cfg: TrainConfig, pretrained: bool = True) -> nn.Module:
    """``train.init_from = "hf:<dir>"``: the checkpoint converted by ``hyperconn.hf`` to
    ``model.connection`` with the function-preserving init (``pretrained=False``: the architecture
    alone, for a run whose checkpoint supplies every weight)."""
    from ..hf import ConversionConfig, HFLanguageModel  # the hf extra: imported only for such runs
    from ..hf.lm import parse_init_from

    spec = ConversionConfig.of(cfg.model.connection, stream_dtype=cfg.model.stream_dtype)
    model = HFLanguageModel.from_directory(parse_init_from(cfg.train.init_from), spec, pretrained)
    if cfg.model.vocab_size is not None and model.vocab_size < cfg.model.vocab_size:
        raise ValueError(
            f"{cfg.train.init_from}: the model has {model.vocab_size} token ids, fewer than its tokenizer's "
            f"{cfg.model.vocab_size}"
        )
    return model
