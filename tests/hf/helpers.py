"""Tiny Llama-family causal LMs built from configs (no hub access)."""

from __future__ import annotations

import pytest
import torch
from tests.support import perturb, slow_unless

transformers = pytest.importorskip("transformers")

# family -> config class; the first four are the issue's, the rest share their decoder layer
FAMILY_CONFIGS = {
    "llama": "LlamaConfig",
    "mistral": "MistralConfig",
    "qwen2": "Qwen2Config",
    "qwen3": "Qwen3Config",
    "gemma": "GemmaConfig",
    "glm": "GlmConfig",
    "helium": "HeliumConfig",
    "ministral": "MinistralConfig",
    "olmo": "OlmoConfig",
    "seed_oss": "SeedOssConfig",
    "smollm3": "SmolLM3Config",
    "starcoder2": "Starcoder2Config",
}
FAMILIES = tuple(FAMILY_CONFIGS)
# the families `make test-fast` keeps (one with q/k norms, one without); the others run in `make test`
FAST_FAMILIES = ("llama", "qwen3")


FAMILY_PARAMS = tuple(slow_unless(family in FAST_FAMILIES, family) for family in FAMILIES)
VOCAB = 61

# every kind with a stream count it accepts (residual is one stream, kromhc a power of two)
KIND_STREAMS = (("residual", 1), ("hc", 4), ("mhc", 4), ("mhc_lite", 3), ("kromhc", 4), ("shc", 4), ("shc", 3))


def tiny_config(family: str, layers: int = 3, tied: bool = False, **overrides):
    """A 3-layer, width-32 model of ``family``; ``initializer_range=0.2`` so logits are O(1) and
    a wrong init shows up well above float32 rounding."""
    config_class = getattr(transformers, FAMILY_CONFIGS[family], None)
    if config_class is None:
        pytest.skip(f"transformers {transformers.__version__} has no {FAMILY_CONFIGS[family]}")
    settings = dict(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=64,
        initializer_range=0.2,
        tie_word_embeddings=tied,
        pad_token_id=None,  # some families default to an id outside this vocabulary
    )
    settings.update(overrides)
    return config_class(**settings)


def tiny_model(family: str = "llama", seed: int = 0, **config_overrides):
    """A float32 model in eval mode, weights drawn with ``seed``."""
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(tiny_config(family, **config_overrides))
    return model.float().eval()


def perturb_connections(model, seed: int = 1, scale: float = 0.3) -> None:
    """Move every connection parameter off its init (token-dependent coefficients, streams that
    differ) so tests see the connections at work, not the identity: :func:`tests.support.perturb`."""
    import hyperconn.hf

    perturb(hyperconn.hf.hyper_connections(model), scale=scale, seed=seed)


def token_batch(batch: int = 2, length: int = 9, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def save_checkpoint_with_tokenizer(path, family: str = "llama", texts=None, tied: bool = False, **config):
    """A model directory as users have them: ``save_pretrained`` weights plus a byte-level BPE
    tokenizer trained locally (``tokenizers``) and saved as a ``PreTrainedTokenizerFast`` with an
    eos token. Returns ``(model, tokenizer)``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    texts = texts or ["the quick brown fox jumps over the lazy dog. " * 4, "to be or not to be, that is it. " * 4]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB - 1,  # the model's vocabulary leaves room, as real checkpoints often do
        special_tokens=["<|endoftext|>"],
        initial_alphabet=[],
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer=trainer)
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>")
    model = tiny_model(family, tied=tied, **config)
    model.config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return model, tokenizer
