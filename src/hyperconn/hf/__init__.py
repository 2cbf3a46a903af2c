"""Hyper-connections inside Hugging Face causal LMs (the ``hf`` extra).

``convert(model, kind="shc", num_streams=4)`` rewires a Llama / Mistral / Qwen2 / Qwen3 (and
:data:`SUPPORTED_ARCHITECTURES`) causal LM in place, function-preserving at init;
``load(path)`` reloads a converted model saved with ``save_pretrained``. Guide:
``docs/use-in-your-model.md``.
"""

from .convert import (
    INITS,
    SUPPORTED_ARCHITECTURES,
    ConversionConfig,
    apply_conversion,
    conversion_of,
    convert,
    hyper_connections,
)
from .init import preservation_error, preserve_function_, preserving_pre
from .layer import HyperDecoderLayer
from .lm import HFLanguageModel
from .load import connection_state_keys, load, load_connection_tensors

__all__ = [
    "INITS",
    "SUPPORTED_ARCHITECTURES",
    "ConversionConfig",
    "HFLanguageModel",
    "HyperDecoderLayer",
    "apply_conversion",
    "connection_state_keys",
    "conversion_of",
    "convert",
    "hyper_connections",
    "load",
    "load_connection_tensors",
    "preservation_error",
    "preserve_function_",
    "preserving_pre",
]
