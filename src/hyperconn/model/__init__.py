"""The decoder-only language model, its configuration and named presets."""

from .config import ConnectionConfig, ModelConfig
from .kv_cache import KVCache, LayerKVCache
from .presets import Preset, available_presets, get_preset
from .transformer import Block, LanguageModel

__all__ = [
    "Block",
    "ConnectionConfig",
    "KVCache",
    "LanguageModel",
    "LayerKVCache",
    "ModelConfig",
    "Preset",
    "available_presets",
    "get_preset",
]
