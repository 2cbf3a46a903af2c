"""A converted Hugging Face causal LM behind the interface ``hyperconn train`` uses for its own model.

``HFLanguageModel(idx) -> logits`` for token ids ``(B, T)``; ``generate(idx, max_new_tokens,
temperature, top_k, generator)`` samples with HF's KV cache; ``connections()`` lists the
hyper-connections in the order they run. The HF model is the submodule ``hf``, so the state
dict's keys are ``hf.`` + the HF names.
"""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path

import torch
from torch import nn

from .._optional import require
from ..connections import HyperConnection, frozen_parameters
from ..model.sampling import check_sampling, sample
from .convert import SUPPORTED_ARCHITECTURES, ConversionConfig, apply_conversion, hyper_connections

INIT_FROM_PREFIX = "hf:"


def parse_init_from(value: str) -> Path:
    """``"hf:<dir>"`` -> the directory (it must exist and hold a ``config.json``)."""
    if not isinstance(value, str) or not value.startswith(INIT_FROM_PREFIX) or len(value) == len(INIT_FROM_PREFIX):
        raise ValueError(f"init_from must be 'hf:<local model directory>', got {value!r}")
    path = Path(value[len(INIT_FROM_PREFIX) :]).expanduser().resolve()
    if not (path / "config.json").is_file():
        raise ValueError(f"init_from={value!r}: {path} is not a model directory (no config.json)")
    return path


def check_init_from(init_from: str, tokenizer: str, tokenizer_dir: Path | None, seq_len: int, fsdp: bool) -> Path:
    """Validate a training run that starts from ``init_from = "hf:<dir>"`` before anything is
    built: a supported architecture (read from ``config.json``), ``seq_len`` within its
    ``max_position_embeddings``, the checkpoint's own tokenizer (``tokenizer``, the data config's
    value, must name ``<dir>``: ``tokenizer_dir`` is the directory it names, None for a built-in
    one), no FSDP (the HF model is built whole; DDP works). Returns the directory."""
    path = parse_init_from(init_from)
    config = json.loads((path / "config.json").read_text())
    architectures = config.get("architectures") or []
    if not any(name in SUPPORTED_ARCHITECTURES for name in architectures):
        raise ValueError(
            f"init_from={init_from!r}: architecture {', '.join(architectures) or '(none in config.json)'} is not "
            f"supported; supported: {', '.join(SUPPORTED_ARCHITECTURES)}"
        )
    limit = config.get("max_position_embeddings")
    if isinstance(limit, int) and isinstance(seq_len, int) and seq_len > limit:  # (types: checked by the caller)
        raise ValueError(f"train.seq_len={seq_len} is longer than {path.name}'s max_position_embeddings={limit}")
    if tokenizer_dir is None or Path(tokenizer_dir).resolve() != path:
        raise ValueError(
            f"init_from={init_from!r} trains with the checkpoint's own tokenizer: data.tokenizer must be "
            f"'local:{path}' (the default when init_from is set), got {tokenizer!r}"
        )
    if fsdp:
        raise ValueError("train.fsdp is not supported with train.init_from (the HF model is built whole; DDP works)")
    return path


class HFLanguageModel(nn.Module):
    """Token ids ``(B, T)`` -> next-token logits ``(B, T, vocab)`` through a converted HF model."""

    def __init__(self, hf_model: nn.Module) -> None:
        super().__init__()
        if not any(isinstance(m, HyperConnection) for m in hf_model.modules()):
            raise ValueError("HFLanguageModel wraps a converted model: call hyperconn.hf.convert first")
        self.hf = hf_model
        self.max_seq_len = int(hf_model.config.max_position_embeddings)
        self.vocab_size = int(hf_model.config.vocab_size)
        # transformers 5.x calls the KV cache argument "cache" (the older name warns until 5.40)
        params = inspect.signature(hf_model.forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"

    @classmethod
    def from_directory(
        cls, path: str | os.PathLike, spec: ConversionConfig, pretrained: bool = True
    ) -> HFLanguageModel:
        """Load ``path`` (``from_pretrained``, float32, local files only) and convert it with
        ``spec``; ``pretrained=False`` builds the architecture from its ``config.json`` alone, with
        untouched connections (for a run whose checkpoint supplies every weight next)."""
        transformers = require("transformers", "hyperconn train --init-from hf:...")
        path = str(Path(path).expanduser())
        if pretrained:
            model = transformers.AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
        else:
            config = transformers.AutoConfig.from_pretrained(path, local_files_only=True)
            model = transformers.AutoModelForCausalLM.from_config(config)
        # float32 master weights (the trainer autocasts); the dtype argument's name differs across versions
        apply_conversion(model.float(), spec, initialise=pretrained)
        return cls(model.train())

    def connections(self) -> list[HyperConnection]:
        return hyper_connections(self.hf)

    def non_embedding_parameters(self) -> int:
        """Parameters outside the token embedding and the LM head (counted once if tied)."""
        skip = {id(self.hf.get_input_embeddings().weight), id(self.hf.get_output_embeddings().weight)}
        return sum(p.numel() for p in self.parameters() if id(p) not in skip)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        if idx.shape[-1] > self.max_seq_len:
            raise ValueError(
                f"sequence of {idx.shape[-1]} tokens is longer than max_position_embeddings={self.max_seq_len}"
            )
        return self.hf(input_ids=idx, use_cache=False).logits

    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Sample ``max_new_tokens`` continuations of ``idx (B, T)`` with HF's KV cache.

        ``temperature=0`` is greedy; ``top_k`` keeps the k most likely tokens. When the context
        reaches ``max_position_embeddings`` the cache is rebuilt from the last half of it."""
        check_sampling(temperature, top_k)
        was_training = self.training
        self.eval()
        window = self.max_seq_len
        out, cache, pos, logits = idx, None, 0, None
        with frozen_parameters(self.hf):  # nothing writes the weights during the loop
            for _ in range(max_new_tokens):
                if cache is None or pos >= window:
                    context = out[:, -(window // 2 if pos >= window else window - 1) :]
                    step = self.hf(input_ids=context, use_cache=True)
                    pos = context.shape[1]
                else:
                    step = self.hf(input_ids=out[:, -1:], use_cache=True, **{self._cache_arg: cache})
                    pos += 1
                cache, logits = getattr(step, self._cache_arg), step.logits[:, -1]
                out = torch.cat([out, sample(logits.float(), temperature, top_k, generator)], dim=1)
        self.train(was_training)
        return out

