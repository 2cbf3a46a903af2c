"""Data for the language-model trainer: the bundled corpus, tokenizers, cached token streams, batches."""

from .batching import TokenBatcher, val_batches
from .config import DataConfig
from .prepare import PreparedData, load_tokenizer, prepare_data
from .tokenizers import BPETokenizer, ByteTokenizer, PretrainedTokenizer, Tokenizer

__all__ = [
    "BPETokenizer",
    "ByteTokenizer",
    "DataConfig",
    "PretrainedTokenizer",
    "PreparedData",
    "TokenBatcher",
    "Tokenizer",
    "load_tokenizer",
    "prepare_data",
    "val_batches",
]
