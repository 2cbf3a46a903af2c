"""``analyze_hf``: a local DeepSeek-V4 checkpoint's hyper-connections, measured on a local text.

Loads the checkpoint directory with ``AutoModelForCausalLM.from_pretrained(local_files_only=True)``
and its tokenizer (or ``tokenizer``), tokenises the text file, runs ``ceil(tokens / window)``
windows of ``window`` tokens spread evenly over the text (one window per forward pass, through the
base model: the LM head is not needed) while :func:`~hyperconn.analysis.capture.capture_statistics`
reads every ``DeepseekV4HyperConnection``'s ``H_pre``, ``H_res``, ``H_post`` in this library's
convention (:mod:`hyperconn.diagnostics.deepseek_v4`), and writes ``analysis.json``, ``analysis.md``
and the plots as ``hyperconn analyze`` does for a run, plus the head's readout weights
(``hc_head``: per-stream mean / min / max over tokens).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from .._optional import require
from ..diagnostics import deepseek_v4 as dsv4
from ..fileio import atomic_write_text
from .capture import capture_statistics

DEFAULT_TOKENS = 4096
DEFAULT_WINDOW = 512
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


def _positive(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def window_starts(length: int, window: int, count: int) -> list[int]:
    """``count`` start offsets of ``window``-token windows spread evenly over ``length`` tokens
    (first at 0, last ending at the end; ``count`` is capped so that windows do not overlap)."""
    count = max(1, min(count, length // window))
    if count == 1:
        return [0]
    span = length - window
    return [round(k * span / (count - 1)) for k in range(count)]


def load_tokenizer(hf_dir: Path, tokenizer: str | Path | None):
    """The checkpoint's own tokenizer, or ``tokenizer`` (a directory or a ``tokenizer.json`` file)."""
    transformers = require("transformers", "hyperconn analyze --hf")
    if tokenizer is None:
        if not any((hf_dir / f).is_file() for f in TOKENIZER_FILES):
            raise ValueError(
                f"{hf_dir} has no tokenizer ({', '.join(TOKENIZER_FILES)}); pass one with --tokenizer "
                "(a tokenizer directory or a tokenizer.json file)"
            )
        tokenizer = hf_dir
    path = Path(tokenizer)
    if path.is_file():
        return transformers.PreTrainedTokenizerFast(tokenizer_file=str(path))
    if path.is_dir():
        return transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
    raise FileNotFoundError(f"no tokenizer at {path}")


def readout_summary(name: str, weights: list[torch.Tensor]) -> dict[str, Any]:
    """Per-stream mean / min / max of the head's readout weights over all tokens, and of their sum."""
    w = torch.cat(weights)
    total = w.sum(-1)
    return {
        "name": name,
        "tokens": w.shape[0],
        "mean": w.mean(0).tolist(),
        "min": w.amin(0).tolist(),
        "max": w.amax(0).tolist(),
        "sum_mean": float(total.mean()),
        "sum_min": float(total.min()),
        "sum_max": float(total.max()),
    }


def readout_markdown(readout: dict[str, Any]) -> str:
    from .report import fmt, md_table

    rows = [[i, fmt(m), fmt(lo), fmt(hi)] for i, (m, lo, hi) in
            enumerate(zip(readout["mean"], readout["min"], readout["max"], strict=True))]  # fmt: skip
    rows.append(["sum", fmt(readout["sum_mean"]), fmt(readout["sum_min"]), fmt(readout["sum_max"])])
    return "\n".join([
        "## Readout (hc_head)",
        "",
        f"`{readout['name']}` collapses the streams before the final norm: output `sum_i w_i x_i` with per-token "
        f"weights `w = sigmoid(hc_scale * hc_fn u + hc_base) + eps` ({readout['tokens']} tokens).",
        "",
        md_table(["stream i", "mean w_i", "min w_i", "max w_i"], rows),
        "",
    ])  # fmt: skip


def analyze_hf(
    hf_dir: str | Path,
    text_file: str | Path,
    out_dir: str | Path | None = None,
    tokens: int = DEFAULT_TOKENS,
    *,
    window: int = DEFAULT_WINDOW,
    tokenizer: str | Path | None = None,
    device: str | None = None,
    dtype: str = "auto",
) -> dict:
    """Analyse the DeepSeek-V4 checkpoint in ``hf_dir`` on ``text_file``; returns the data written to
    ``analysis.json`` (``out_dir``, default ``./analysis-<checkpoint name>``).

    ``tokens``: tokens to run in all (windows of ``window`` tokens, capped by the text's length);
    ``device``: where the model runs (default CUDA when available, else CPU; ``"auto"`` spreads it
    with ``device_map="auto"``); ``dtype`` as ``from_pretrained`` takes it (``"auto"``: the
    checkpoint's)."""
    hf_dir, text_file = Path(hf_dir), Path(text_file)
    _positive("tokens", tokens)
    _positive("window", window)
    if not hf_dir.is_dir():
        raise FileNotFoundError(f"no checkpoint directory at {hf_dir}")
    if not text_file.is_file():
        raise FileNotFoundError(f"no text file at {text_file}")
    transformers = require("transformers", "hyperconn analyze --hf")
    version = dsv4.check_transformers()
    config = transformers.AutoConfig.from_pretrained(hf_dir, local_files_only=True)
    if config.model_type != "deepseek_v4":
        raise ValueError(
            f"{hf_dir} is not a DeepSeek-V4 checkpoint (model_type {config.model_type!r}); "
            "`hyperconn analyze --hf` reads DeepSeek-V4's own hyper-connections. For a run of this library "
            "use `hyperconn analyze RUN`"
        )
    tok = load_tokenizer(hf_dir, tokenizer)
    text = text_file.read_text(encoding="utf-8")
    ids = tok(text, add_special_tokens=False)["input_ids"]
    if not ids:
        raise ValueError(f"{text_file} tokenises to no tokens")
    if max(ids) >= config.vocab_size:
        raise ValueError(f"the tokenizer gives id {max(ids)} but the model's vocab_size is {config.vocab_size}")

    from ..fileio import write_json
    from .report import write_analysis  # numpy / matplotlib: the analysis extra

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    placement = {"device_map": "auto"} if device == "auto" else {}
    model = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, local_files_only=True, dtype=dtype, **placement)
    if device != "auto":
        model = model.to(device)
    if not dsv4.is_deepseek_v4(model):
        raise ValueError(f"{hf_dir} loaded as {type(model).__name__}, which has no DeepseekV4HyperConnection")
    window = min(window, tokens, len(ids))
    starts = window_starts(len(ids), window, math.ceil(tokens / window))
    input_device = model.get_input_embeddings().weight.device
    batches = [torch.tensor([ids[s : s + window]], device=input_device) for s in starts]
    base = getattr(model, "model", model)

    def forward(_model, batch):
        return base(input_ids=batch, use_cache=False)

    with dsv4.ReadoutRecorder(model) as heads:
        result = capture_statistics(model, batches, forward)
    readouts = heads.pop()
    readout = readout_summary(readouts[0].name, [r.weights for r in readouts])
    conns = dsv4.connections(model)
    info = {
        "checkpoint": str(hf_dir),
        "model": type(model).__name__,
        "transformers": version,
        "streams (hc_mult)": config.hc_mult,
        "hc_sinkhorn_iters": config.hc_sinkhorn_iters,
        "decoder layers": config.num_hidden_layers,
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "text": str(text_file),
        "text bytes": len(text.encode("utf-8")),
        "text tokens": len(ids),
        "windows": len(starts),
        "window tokens": window,
        "tokens per connection": result.layers[0].tokens,
        "parameters (total)": sum(p.numel() for p in model.parameters()),
        "parameters (connections)": sum(p.numel() for _, c in conns for p in c.parameters()),
        "parameters (hc_head)": sum(p.numel() for _, h in dsv4.heads(model) for p in h.parameters()),
    }
    out = Path(out_dir) if out_dir is not None else Path(f"analysis-{hf_dir.resolve().name}")
    out.mkdir(parents=True, exist_ok=True)
    title = f"DeepSeek-V4 {hf_dir.resolve().name} (mHC, n={config.hc_mult})"
    data = write_analysis(result, out, title, info)
    data["readout"] = readout
    write_json(out / "analysis.json", data, indent=2)
    md = out / "analysis.md"
    atomic_write_text(md, md.read_text(encoding="utf-8").rstrip("\n") + "\n\n" + readout_markdown(readout))
    return data
