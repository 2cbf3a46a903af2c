"""Regional compilation: ``torch.compile`` each transformer block on its own.

Every block has the same structure, so Inductor compiles one and reuses the code for the others
(the compile time is that of one block, not of the whole model); the embedding, the ends and the
head stay eager. The blocks' connections are compiled with them: their PyTorch paths are
written so Inductor fuses the mixing and the depth add (``hyperconn.connections.ops``).
"""

from __future__ import annotations

from .transformer import LanguageModel


def compile_blocks(model: LanguageModel, **compile_options) -> LanguageModel:
    """Compile every block of ``model`` in place (``Block.compile``, i.e. ``torch.compile`` of
    its forward with ``compile_options``) and return ``model``. Parameters and state-dict keys
    are unchanged; the first step after this pays the one-off compile."""
    if not isinstance(model, LanguageModel):
        raise ValueError(f"compile_blocks needs a hyperconn LanguageModel, got {type(model).__name__}")
    for block in model.blocks:
        block.compile(**compile_options)
    return model
