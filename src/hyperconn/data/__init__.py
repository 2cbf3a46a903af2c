"""Data for the language-model trainer: the bundled corpora, tokenizers, cached token streams, token
shards (``hyperconn data prepare``), per-rank streaming, batches."""

from .batching import TokenBatcher, val_batches
from .config import DataConfig
from .prepare import PreparedData, load_tokenizer, prepare_data
from .shard_writer import prepare_shards
from .shards import ShardedTokens, open_shards
from .streaming import StreamingBatcher, TrainStream
from .tokenizers import BPETokenizer, ByteTokenizer, PretrainedTokenizer, Tokenizer

__all__ = [
    "BPETokenizer",
    "ByteTokenizer",
    "DataConfig",
    "PretrainedTokenizer",
    "PreparedData",
    "ShardedTokens",
    "StreamingBatcher",
    "TokenBatcher",
    "Tokenizer",
    "TrainStream",
    "load_tokenizer",
    "open_shards",
    "prepare_data",
    "prepare_shards",
    "val_batches",
]
