"""``hyperconn bench {layer,step,decode,call,memory,plot}``: the benchmarks, as a table on stdout plus JSON."""

from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path

import torch

from ..connections import available_connections
from ..vocabulary import add_renamed_flag
from .call import CallBenchConfig, run_call_bench
from .call import config_dict as call_config_dict
from .layer import LayerBenchConfig, add_ratios, run_layer_bench
from .layer import config_dict as layer_config_dict
from .model import ModelBenchConfig, run_decode_bench, run_step_bench
from .model import config_dict as model_config_dict
from .report import format_table, machine_description, write_json

LAYER_COLUMNS = ["n", "dim", "dtype", "mode", "contender", "median_ms", "iqr_ms", "x_floor",
                 "speedup_vs_naive", "speedup_vs_pkg_mhc", "saved_mib"]
STEP_COLUMNS = ["preset", "contender", "precision", "median_ms", "iqr_ms", "x_residual", "extra_ms", "floor_ms",
                "extra_gflop", "extra_mib", "skipped", "saved_gflop", "saved_mib"]
DECODE_COLUMNS = ["preset", "contender", "precision", "median_ms", "iqr_ms", "tokens_per_s", "x_residual",
                  "aten_ops_per_token"]
MEMORY_COLUMNS = ["preset", "contender", "batch", "seq_len", "stream_mib", "saved_mib", "extra_saved_mib",
                  "x_residual"]
CALL_COLUMNS = ["contender", "n", "dim", "us_per_call", "iqr_us", "aten_ops", "top_ops"]


def _csv(kind):
    def parse(text: str):
        try:
            return tuple(kind(v) for v in text.split(",") if v)
        except ValueError as err:
            raise argparse.ArgumentTypeError(f"expected comma-separated {kind.__name__} values, got {text!r}") from err

    return parse


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", help="also write the rows, config and machine description to this JSON file")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads (default 1: steadier on a shared CPU)")
    p.add_argument("--repeats", type=int, help="interleaved rounds (median over them)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, 2 rounds, eager: checks that it runs")
    p.add_argument("--kinds", type=_csv(str), default=available_connections(),
                   help="comma-separated connection kinds (default: all)")


def register(subparsers) -> None:
    bench = subparsers.add_parser("bench", help="speed benchmarks (layer, training step, decode)")
    sub = bench.add_subparsers(dest="bench_command", required=True)

    p = sub.add_parser("layer", help="one connection, forward+backward, every kind vs references")
    _common(p)
    p.add_argument("--num-streams", type=_csv(int), default=(2, 4, 8), help="comma-separated n (default 2,4,8)")
    add_renamed_flag(p, "--streams", type=_csv(int))
    p.add_argument("--dims", type=_csv(int), default=(256, 1024))
    p.add_argument("--dtypes", type=_csv(str), default=("fp32", "bf16"))
    p.add_argument("--modes", type=_csv(str), default=("eager", "compiled"))
    p.add_argument("--tokens", type=int, default=2048)
    p.add_argument("--recompute", action="store_true", help="also time every kind with recompute=True")
    p.add_argument("--no-package", action="store_true", help="leave out the hyper-connections package")
    p.add_argument("--no-naive", action="store_true", help="leave out the naive official-math references")
    p.add_argument("--floor", choices=("compiled", "eager", "none"), default="compiled",
                   help="the constant-coefficient floor: torch.compile-d (default), eager, or left out")
    p.set_defaults(func=_layer)

    for name, helptext, func, precision in (
        ("step", "training-step time of the model, every kind vs residual", _step, "bf16"),
        ("decode", "generation tokens/s (KV cache, batch 1), every kind vs residual", _decode, "fp32"),
    ):
        p = sub.add_parser(name, help=helptext)
        _common(p)
        p.add_argument("--presets", type=_csv(str), default=("tiny", "small") if name == "step" else ("tiny",))
        p.add_argument("--num-streams", type=int, default=4, help="n of every kind but residual (default 4)")
        add_renamed_flag(p, "--streams", type=int)
        p.add_argument("--batch-size", type=int, default=4)
        p.add_argument("--seq-len", type=int, help="default: the preset's max_seq_len")
        p.add_argument("--precision", choices=("bf16", "fp32"), default=precision)
        p.add_argument("--new-tokens", type=int, default=64)
        p.add_argument("--compile", action="store_true",
                       help="torch.compile the model (decode: the whole forward, dynamic shapes); "
                            "the warm-up round pays the compile")
        p.add_argument("--stream-dtype", choices=("float32", "bfloat16"), default="float32",
                       help="model.stream_dtype of every contender but residual")
        p.set_defaults(func=func)

    p = sub.add_parser("call", help="one connection call on one token, no grad: microseconds and ATen ops")
    _common(p)
    p.add_argument("--num-streams", type=int, default=4, help="n of every kind but residual (default 4)")
    add_renamed_flag(p, "--streams", type=int)
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--calls", type=int, default=200, help="calls per timed round")
    p.set_defaults(func=_call)

    p = sub.add_parser("memory", help="residual-stream bytes and bytes saved for backward: residual, "
                       "n-widened and frac-connections (no timing)")
    _common(p)
    p.set_defaults(kinds=("hc", "mhc", "shc"), func=_memory)
    p.add_argument("--presets", type=_csv(str), default=("small",))
    p.add_argument("--num-streams", type=int, default=4, help="n of the widened contenders (default 4)")
    p.add_argument("--num-fracs", type=int, default=4, help="m of the frac-connection contenders (default 4)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--seq-len", type=int, help="default: the preset's max_seq_len")

    p = sub.add_parser("plot", help="PNG of a layer grid JSON: ms against n, one panel per C, one line per kind")
    p.add_argument("grid_json", help="a JSON written by hyperconn bench layer --json")
    p.add_argument("--out", required=True, help="the PNG to write")
    p.add_argument("--mode", default="eager", choices=("eager", "compiled"))
    p.add_argument("--dtype", default="fp32", choices=("fp32", "bf16"))
    p.set_defaults(func=_plot)


def _setup(args) -> None:
    if args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    torch.set_num_threads(args.threads)


def _finish(args, name: str, rows: list[dict], columns: list[str], config: dict) -> int:
    print(format_table(rows, columns))
    if args.json:
        payload = {
            "bench": name,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "machine": machine_description(),
            "config": config,
            "rows": rows,
        }
        print(f"wrote {write_json(args.json, payload)}")
    return 0


def _layer(args) -> int:
    _setup(args)
    cfg = LayerBenchConfig(
        kinds=args.kinds, num_streams=args.num_streams, dims=args.dims, dtypes=args.dtypes, modes=args.modes,
        tokens=args.tokens, recompute=args.recompute, package=not args.no_package, naive=not args.no_naive,
        floor=args.floor != "none", floor_compiled=args.floor == "compiled",
    )
    if args.smoke:
        cfg.num_streams, cfg.dims, cfg.tokens, cfg.modes, cfg.repeats, cfg.warmup = (2, 4), (16,), 32, ("eager",), 2, 1
        cfg.floor_compiled = False
    if args.repeats:
        cfg.repeats = args.repeats
    rows = add_ratios(run_layer_bench(cfg))
    return _finish(args, "layer", rows, LAYER_COLUMNS, layer_config_dict(cfg))


def _model_cfg(args) -> ModelBenchConfig:
    cfg = ModelBenchConfig(
        presets=args.presets, kinds=args.kinds, num_streams=args.num_streams, batch_size=args.batch_size,
        seq_len=args.seq_len, precision=args.precision, compiled=args.compile, new_tokens=args.new_tokens,
        stream_dtype=args.stream_dtype,
    )
    if args.smoke:
        cfg.presets, cfg.shrink, cfg.batch_size, cfg.seq_len = ("tiny",), (32, 1), 1, 16
        cfg.new_tokens, cfg.prompt_len, cfg.repeats, cfg.warmup, cfg.compiled = 4, 4, 2, 0, False
    if args.repeats:
        cfg.repeats = args.repeats
    return cfg


def _step(args) -> int:
    _setup(args)
    cfg = _model_cfg(args)
    return _finish(args, "step", run_step_bench(cfg), STEP_COLUMNS, model_config_dict(cfg))


def _decode(args) -> int:
    _setup(args)
    cfg = _model_cfg(args)
    return _finish(args, "decode", run_decode_bench(cfg), DECODE_COLUMNS, model_config_dict(cfg))


def _call(args) -> int:
    _setup(args)
    cfg = CallBenchConfig(kinds=args.kinds, num_streams=args.num_streams, dim=args.dim, calls=args.calls)
    if args.smoke:
        cfg.dim, cfg.calls, cfg.repeats, cfg.warmup = 16, 3, 2, 0
    if args.repeats:
        cfg.repeats = args.repeats
    return _finish(args, "call", run_call_bench(cfg), CALL_COLUMNS, call_config_dict(cfg))


def _memory(args) -> int:
    from .memory import MemoryBenchConfig, run_memory_bench
    from .memory import config_dict as memory_config_dict

    _setup(args)
    cfg = MemoryBenchConfig(
        presets=args.presets, kinds=args.kinds, num_streams=args.num_streams, num_fracs=args.num_fracs,
        batch_size=args.batch_size, seq_len=args.seq_len,
    )
    if args.smoke:
        cfg.presets, cfg.shrink, cfg.batch_size, cfg.seq_len = ("tiny",), (32, 1), 1, 16
    return _finish(args, "memory", run_memory_bench(cfg), MEMORY_COLUMNS, memory_config_dict(cfg))


def _plot(args) -> int:
    from .plot import plot_layer_grid

    payload = json.loads(Path(args.grid_json).read_text())
    machine = payload.get("machine", {})
    title = f"{args.mode}, {args.dtype}, {payload['config']['tokens']} tokens; {machine.get('cpu', '?')}"
    print(f"wrote {plot_layer_grid(payload['rows'], args.out, args.mode, args.dtype, title)}")
    return 0
