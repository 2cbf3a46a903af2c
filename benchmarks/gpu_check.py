"""One-shot GPU check of the fused Triton kernels (``hyperconn.kernels``): correctness, speed, training step.

Run on a CUDA machine; it imports only torch, triton and hyperconn (``pip install -e . --no-deps`` or
``PYTHONPATH=src``) and finishes in about 5-8 minutes (two compiles of the step model)::

    PYTHONPATH=src python benchmarks/gpu_check.py --out docs/results/gpu_check.json

It prints everything and writes ``--out`` (JSON) plus the same stem with ``.md`` (a summary).
Stages, in order, each independent (a failure is recorded with its traceback and the rest still
run; a stage, or a case within one, that would start after ``--budget`` seconds is skipped):
``env`` (device, versions), ``copy`` (device copy bandwidth), ``sweep`` (block sizes and variants
of the fused kernels, sHC fwd+bwd at C = 2048 bf16; the fastest are used from then on unless
``--keep-blocks``), ``correctness`` (fused vs PyTorch path, values and every gradient: sHC n = 4
bf16 and fp32, n = 3 bf16, mHC n = 4 bf16; C = 1024, 4099 tokens), ``step`` (training step of
the qwen3-0.6b shape with ``--layers`` layers, bf16 autocast: residual vs sHC n = 4 with and
without the kernels, and both under ``torch.compile``) and ``layer`` (width + identity branch +
depth, n = 4, 8192 tokens, C in
{1024, 2048} bf16: fused vs PyTorch eager vs torch.compile, and C = 1024 fp32 streams: fused vs
eager; fwd+bwd and fwd only; achieved bandwidth for the byte model below). Triton compiles each
kernel variant on first use (seconds each); the order lets later stages reuse earlier variants.

Byte model (``b`` bytes per stream element, T tokens, n streams, width C; coefficients, the
projection weight and per-token scalars are O(T n^2) and ignored). What any width+depth must move:
forward reads x, writes u and mixed (width), reads mixed and F(u), writes x' (depth):
``(4n + 2) T C b``; backward reads dx', F(u), writes dF (depth; dmixed = dx' is passed through),
reads x, du, dmixed, writes dx (width): ``(4n + 3) T C b``. Our kernels move more: the width
forward reads x twice (statistics+projection, then mixing; the second read may hit L2), the
width backward reads x three times and du/dmixed twice (``dpre/dH`` reduction, ``dx``, weight
gradient): ``(5n + 2)`` forward and ``(7n + 4)`` backward. Bandwidth is reported for the "must"
model as a fraction of the measured copy bandwidth (read + write of a 1 GiB tensor).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
import traceback
from pathlib import Path

import torch

import hyperconn
from hyperconn import kernels
from hyperconn.fileio import atomic_write_text, write_json
from hyperconn.kernels import fused_width
from hyperconn.train.step import train_step

STREAMS = 4
# sizes; --smoke shrinks them to run on CPU under TRITON_INTERPRET=1 (a check of this script only)
SIZES = {"device": "cuda", "tokens": 8192, "dims": (1024, 2048), "fp32_dims": (1024,), "corr_tokens": 4099,
         "corr_dim": 1024, "copy_bytes": 2**30, "sweep_dim": 2048}
SMOKE_SIZES = {"device": "cpu", "tokens": 37, "dims": (40,), "fp32_dims": (40,), "corr_tokens": 37,
               "corr_dim": 40, "copy_bytes": 2**20, "sweep_dim": 40,
               "model_override": {"vocab_size": 256, "dim": 32, "n_heads": 2, "n_kv_heads": 1, "head_dim": 16,
                                  "mlp_dim": 64}}
# errors are max |err| / max(1, max |ref|). float32: fused vs PyTorch. bfloat16: both paths vs the
# float32 truth (float32 streams, same parameters): fused <= BF16_FACTOR * PyTorch + BF16_FLOOR
FP32_TOL = 1e-4
# a spec for "can the kernels run here at all" in the env stage
KERNEL_PROBE = kernels.interface.GivenCoefficients(kind="probe", mixing=lambda streams: None)
BF16_FACTOR, BF16_FLOOR = 2.0, 2.0**-8


# ---------------------------------------------------------------------------------------------
# helpers


@contextlib.contextmanager
def backend(module, name: str):
    """Every connection inside ``module`` on backend ``name`` ("torch" / "triton") for the block."""
    conns = [m for m in module.modules() if isinstance(m, hyperconn.HyperConnection)]
    old = [c.backend for c in conns]
    for c in conns:
        c.backend = name
    try:
        yield
    finally:
        for c, b in zip(conns, old, strict=True):
            c.backend = b


def kernel_width(conn, x):
    return kernels.width(conn.kernel_spec(), x)


def fused_layer(conn, x):
    u, mixed, h_post = kernel_width(conn, x)
    return kernels.depth(mixed, h_post, u)


def torch_layer(conn, x):
    u, mixed, h_post = conn.width(x)
    return conn.depth(mixed, h_post, u)


def perturbed(kind, n, dim, device, scale=0.1, seed=0):
    conn = hyperconn.make_connection(kind, n, dim, layer_index=1).to(device)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    with torch.no_grad():
        for p in conn.parameters():
            p.add_((scale * torch.randn(p.shape, generator=gen)).to(device))
    return conn


def time_contenders(contenders: dict, reps: int, warmup: int = 3) -> dict:
    """Median milliseconds per contender, CUDA events (wall clock on CPU), rounds interleaved."""
    cuda = SIZES["device"] == "cuda"
    for fn in contenders.values():
        for _ in range(warmup):
            fn()
    if cuda:
        torch.cuda.synchronize()
    times = {name: [] for name in contenders}
    for _ in range(reps):
        for name, fn in contenders.items():
            if cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                end.synchronize()
                times[name].append(start.elapsed_time(end))
            else:
                t0 = time.perf_counter()
                fn()
                times[name].append(1e3 * (time.perf_counter() - t0))
    return {name: statistics.median(v) for name, v in times.items()}


def rel_err(got, ref):
    err = (got.float() - ref.float()).abs().max().item()
    return err / max(1.0, ref.float().abs().max().item())


# ---------------------------------------------------------------------------------------------
# stages


def stage_env(args, results):
    import triton

    if SIZES["device"] != "cuda":
        probe = kernels.unsupported_reason(KERNEL_PROBE, torch.zeros(2, 4, 8))
        return {"device": "cpu (smoke run under the Triton interpreter)", "torch": torch.__version__,
                "triton": triton.__version__, "kernels_available": probe is None}
    props = torch.cuda.get_device_properties(0)
    return {
        "device": torch.cuda.get_device_name(0),
        "capability": list(torch.cuda.get_device_capability(0)),
        "memory_gib": round(props.total_memory / 2**30, 1),
        "sm_count": props.multi_processor_count,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "triton": triton.__version__,
        "hyperconn": hyperconn.__version__,
        "kernels_available": kernels.unsupported_reason(KERNEL_PROBE, torch.zeros(2, 4, 8, device="cuda")) is None,
        "blocks": blocks(),
    }


def stage_correctness(args, results):
    # n = 2 and hc are covered by the interpreter tests; every case here compiles new variants
    cases = [
        ("shc", 4, torch.bfloat16), ("shc", 4, torch.float32), ("shc", 3, torch.bfloat16), ("mhc", 4, torch.bfloat16),
    ]
    tokens, dim, dev = SIZES["corr_tokens"], SIZES["corr_dim"], SIZES["device"]  # ragged token count
    out = []
    for kind, n, dtype in cases:
        row = {"kind": kind, "n": n, "dtype": str(dtype).removeprefix("torch."), "tokens": tokens, "C": dim}
        try:
            conn = perturbed(kind, n, dim, dev)
            gen = torch.Generator(device=dev).manual_seed(1)
            x = torch.randn(tokens, n, dim, device=dev, generator=gen).to(dtype)
            w = torch.randn(dim, device=dev, generator=gen).to(dtype)
            g = torch.randn(tokens, n, dim, device=dev, generator=gen).to(dtype)
            names = ["streams", "branch", *(name for name, _ in conn.named_parameters())]

            def run(width, depth, x, w, g, conn=conn, names=names):
                x = x.detach().requires_grad_()
                w = w.detach().requires_grad_()
                u, mixed, h_post = width(conn, x)
                y = depth(mixed, h_post, torch.tanh(u) * w)
                inputs = [x, w, *conn.parameters()]
                grads = torch.autograd.grad(y, inputs, g, allow_unused=True, materialize_grads=True)
                keys = ["u", "mixed", "h_post", "out", *(f"d_{k}" for k in names)]
                return dict(zip(keys, (u, mixed, h_post, y, *grads), strict=True))

            fused = run(kernel_width, kernels.depth, x, w, g)
            with backend(conn, "torch"):
                ref = run(lambda c, s: c.width(s), conn.depth, x, w, g)
                if dtype != torch.float32:
                    truth = run(lambda c, s: c.width(s), conn.depth, x.float(), w.float(), g.float())
            if dtype == torch.float32:
                errs = {k: rel_err(v, ref[k]) for k, v in fused.items()}
                row["ok"] = max(errs.values()) <= FP32_TOL
            else:
                errs = {k: rel_err(v, truth[k]) for k, v in fused.items()}
                ref_errs = {k: rel_err(v, truth[k]) for k, v in ref.items()}
                row["pytorch_errors_vs_fp32"] = {k: float(f"{v:.3g}") for k, v in ref_errs.items()}
                row["ok"] = all(errs[k] <= BF16_FACTOR * ref_errs[k] + BF16_FLOOR for k in errs)
            row["max_rel_err"] = max(errs.values())
            row["errors"] = {k: float(f"{v:.3g}") for k, v in errs.items()}
        except Exception as e:  # noqa: BLE001 -- report and go on
            row["ok"] = False
            row["error"] = f"{type(e).__name__}: {e}"
            row["traceback"] = traceback.format_exc()
        print(f"  {row['kind']:6s} n={row['n']} {row['dtype']:8s} ok={row['ok']} "
              f"max_rel_err={row.get('max_rel_err', float('nan')):.2e} {row.get('error', '')}", flush=True)
        out.append(row)
    criterion = (f"float32: fused vs PyTorch <= {FP32_TOL}; bfloat16: fused vs float32 truth <= "
                 f"{BF16_FACTOR} x (PyTorch bf16 vs truth) + {BF16_FLOOR}")
    result = {"criterion": criterion, "blocks": blocks(), "cases": out}
    if SIZES["device"] != "cuda":
        result["note"] = "smoke run: the interpreter truncates float32 -> bfloat16; bf16 'ok' flags mean nothing"
    return result


def stage_copy(args, results):
    nbytes = SIZES["copy_bytes"]
    src = torch.empty(nbytes // 4, device=SIZES["device"], dtype=torch.float32).normal_()
    dst = torch.empty_like(src)
    ms = time_contenders({"copy": lambda: dst.copy_(src)}, reps=30)["copy"]
    out = {"bytes_moved": 2 * nbytes, "ms": round(ms, 4), "gb_per_s": round(2 * nbytes / ms / 1e6, 1)}
    print("  " + json.dumps(out), flush=True)
    return out


def _layer_case(dim, dtype, reps, compile_torch):
    """Median ms of width + identity branch + depth; contenders interleaved round by round."""
    n, t, dev = STREAMS, SIZES["tokens"], SIZES["device"]
    conn = perturbed("shc", n, dim, dev)
    x = torch.randn(t, n, dim, device=dev).to(dtype).requires_grad_()
    g = torch.randn(t, n, dim, device=dev).to(dtype)

    def fwd_bwd(layer, torch_path=False):
        def run():
            with backend(conn, "torch") if torch_path else contextlib.nullcontext():
                x.grad = None
                layer(conn, x).backward(g)
        return run

    def fwd(layer, torch_path=False):
        def run():
            with torch.no_grad(), backend(conn, "torch") if torch_path else contextlib.nullcontext():
                layer(conn, x)
        return run

    contenders = {
        "fused fwd+bwd": fwd_bwd(fused_layer), "fused fwd": fwd(fused_layer),
        "eager fwd+bwd": fwd_bwd(torch_layer, True), "eager fwd": fwd(torch_layer, True),
    }
    if compile_torch:
        compiled = torch.compile(torch_layer, dynamic=False)
        fwd_bwd(compiled, True)()  # compile forward+backward and the no-grad forward outside the timing
        fwd(compiled, True)()
        contenders.update({"compiled fwd+bwd": fwd_bwd(compiled, True), "compiled fwd": fwd(compiled, True)})
    return time_contenders(contenders, reps)


def stage_layer(args, results):
    copy_bw = results.get("copy", {}).get("gb_per_s")
    out = []
    for dtype, dims in ((torch.bfloat16, SIZES["dims"]), (torch.float32, SIZES["fp32_dims"])):
        for dim in dims:
            if time.monotonic() - args.t0 > args.budget:
                out.append({"C": dim, "dtype": str(dtype).removeprefix("torch."), "skipped": "time budget"})
                continue
            b = torch.finfo(dtype).bits // 8
            unit = SIZES["tokens"] * dim * b
            must = {"fwd": (4 * STREAMS + 2) * unit, "fwd+bwd": (8 * STREAMS + 5) * unit}
            row = {"C": dim, "dtype": str(dtype).removeprefix("torch."), "n": STREAMS, "tokens": SIZES["tokens"]}
            try:
                # torch.compile only for bf16 (the target); float32 streams are what `hyperconn train`
                # feeds under bf16 autocast, measured against eager
                times = _layer_case(dim, dtype, args.reps, compile_torch=dtype == torch.bfloat16)
                row["ms"] = {k: round(v, 4) for k, v in times.items()}
                for mode in ("fwd+bwd", "fwd"):
                    fused = times[f"fused {mode}"]
                    row[f"speedup_vs_eager {mode}"] = round(times[f"eager {mode}"] / fused, 3)
                    if f"compiled {mode}" in times:
                        row[f"speedup_vs_compiled {mode}"] = round(times[f"compiled {mode}"] / fused, 3)
                    row[f"must_bytes {mode}"] = must[mode]
                    row[f"fused_gb_per_s {mode}"] = round(must[mode] / fused / 1e6, 1)
                    if copy_bw:
                        row[f"fused_frac_of_copy_bw {mode}"] = round(must[mode] / fused / 1e6 / copy_bw, 3)
                        if f"compiled {mode}" in times:
                            row[f"compiled_frac_of_copy_bw {mode}"] = round(
                                must[mode] / times[f"compiled {mode}"] / 1e6 / copy_bw, 3
                            )
            except Exception as e:  # noqa: BLE001
                row["error"] = f"{type(e).__name__}: {e}"
                row["traceback"] = traceback.format_exc()
            print("  " + json.dumps({k: v for k, v in row.items() if k != "traceback"}), flush=True)
            out.append(row)
    return {"byte_model": "must: fwd (4n+2) T C b, fwd+bwd (8n+5) T C b", "blocks": blocks(), "cases": out}


def _train_step_ms(kind, streams, layers, batch, seq, reps, fused: bool, compiled: bool = False):
    from hyperconn.model import ConnectionConfig, LanguageModel, get_preset

    cfg = get_preset("qwen3-0.6b").model
    cfg.n_layers = layers
    cfg.max_seq_len = seq
    cfg.connection = ConnectionConfig(kind=kind, num_streams=streams)
    for key, value in SIZES.get("model_override", {}).items():
        setattr(cfg, key, value)
    cfg.validate()
    dev = SIZES["device"]
    cuda = dev == "cuda"
    torch.manual_seed(0)
    model = LanguageModel(cfg).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1, fused=cuda)
    idx = torch.randint(0, cfg.vocab_size, (batch, seq + 1), device=dev)
    calls = {"width": 0}
    original = kernels.width

    def counting_width(*a, **k):
        calls["width"] += 1
        return original(*a, **k)

    batch_xy = [(idx[:, :-1], idx[:, 1:])]

    # compiled: the trainer's train.compile=true (the whole model; torch.compile always takes PyTorch)
    forward = torch.compile(model) if compiled else model

    def step():
        train_step(forward, opt, batch_xy, precision="bf16", grad_clip=1.0, parameters=model.parameters())

    ctx = backend(model, "triton" if fused else "torch")
    kernels.width = counting_width
    try:
        with ctx:
            step()
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            calls_first = calls["width"]
            ms = time_contenders({"step": step}, reps=reps, warmup=2)["step"]
    finally:
        kernels.width = original
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
    return ms, calls_first, peak


def stage_step(args, results):
    batch, seq = args.batch, args.seq
    out = {"preset": "qwen3-0.6b", "layers": args.layers, "batch": batch, "seq": seq,
           "note": "bf16 autocast, fp32 master weights (fp32 streams, as in hyperconn train), AdamW fused, clip 1.0",
           "blocks": blocks()}
    rows = {}
    for name, kind, n, fused, compiled in (("residual", "residual", 1, True, False),
                                           ("shc n=4 fused", "shc", 4, True, False),
                                           ("shc n=4 pytorch", "shc", 4, False, False),
                                           ("residual compiled", "residual", 1, False, True),
                                           ("shc n=4 compiled", "shc", 4, False, True)):
        if time.monotonic() - args.t0 > args.budget:
            rows[name] = {"skipped": "time budget"}
            continue
        try:
            t_start = time.monotonic()
            ms, calls, peak = _train_step_ms(kind, n, args.layers, batch, seq, args.step_reps, fused, compiled)
            if SIZES["device"] == "cuda":
                torch.cuda.empty_cache()
            rows[name] = {"ms": round(ms, 3), "fused_width_calls_per_step": calls, "peak_gib": round(peak, 2),
                          "wall_s_with_compile": round(time.monotonic() - t_start, 1) if compiled else None}
        except Exception as e:  # noqa: BLE001
            rows[name] = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
        print(f"  {name}: {json.dumps({k: v for k, v in rows[name].items() if k != 'traceback'})}", flush=True)
    out["runs"] = rows
    base = rows.get("residual", {}).get("ms")
    for name in ("shc n=4 fused", "shc n=4 pytorch"):
        if base and "ms" in rows.get(name, {}):
            out[f"overhead vs residual: {name}"] = round(rows[name]["ms"] / base - 1, 4)
    base_compiled = rows.get("residual compiled", {}).get("ms")
    if base_compiled and "ms" in rows.get("shc n=4 compiled", {}):
        ratio = rows["shc n=4 compiled"]["ms"] / base_compiled
        out["overhead vs residual compiled: shc n=4 compiled"] = round(ratio - 1, 4)
    return out


# (BLOCK_T, BLOCK_K, NUM_WARPS, SPLIT_MIX): larger token blocks re-read
# the (n C x 32) projection weight from L2 fewer times; larger feature chunks mean fewer loop trips
# but more registers; SPLIT_MIX writes the sHC coefficients and mixes in a second kernel (lighter
# kernels, one more launch, the second read of the streams certainly from HBM)
SWEEP = [(32, 64, 4, False), (32, 64, 4, True), (16, 128, 4, False)]
BLOCK_KEYS = ("BLOCK_T", "BLOCK_K", "NUM_WARPS", "SPLIT_MIX")


def stage_sweep(args, results):
    dim, dtype, dev = SIZES["sweep_dim"], torch.bfloat16, SIZES["device"]
    conn = perturbed("shc", STREAMS, dim, dev)
    x = torch.randn(SIZES["tokens"], STREAMS, dim, device=dev).to(dtype).requires_grad_()
    g = torch.randn_like(x)
    saved = blocks()
    rows = []
    best = None
    try:
        for config in SWEEP:
            row = dict(zip(BLOCK_KEYS, config, strict=True))
            if time.monotonic() - args.t0 > args.budget:
                rows.append({**row, "skipped": "time budget"})
                continue
            set_blocks(row)
            try:

                def fwd_bwd():
                    x.grad = None
                    fused_layer(conn, x).backward(g)

                def fwd():
                    with torch.no_grad():
                        fused_layer(conn, x)

                t = time_contenders({"fwd+bwd": fwd_bwd, "fwd": fwd}, reps=args.reps)
                row.update({k: round(v, 4) for k, v in t.items()})
                if best is None or row["fwd+bwd"] < best["fwd+bwd"]:
                    best = row
            except Exception as e:  # noqa: BLE001
                row["error"] = f"{type(e).__name__}: {e}"
            print("  " + json.dumps(row), flush=True)
            rows.append(row)
    finally:
        set_blocks(saved)
    out = {"C": dim, "dtype": "bfloat16", "default": saved, "configs": rows}
    if best is not None and not args.keep_blocks:
        # the later stages (correctness, layer, step) run with the fastest blocks
        out["chosen_for_later_stages"] = {k: best[k] for k in BLOCK_KEYS}
        set_blocks(out["chosen_for_later_stages"])
        print(f"  using {out['chosen_for_later_stages']} from here on", flush=True)
    return out


def blocks() -> dict:
    return {k: getattr(fused_width, k) for k in BLOCK_KEYS}


def set_blocks(values: dict) -> None:
    for k in BLOCK_KEYS:
        setattr(fused_width, k, values[k])


STAGES = {
    "env": stage_env,
    "copy": stage_copy,
    "sweep": stage_sweep,
    "correctness": stage_correctness,
    "step": stage_step,
    "layer": stage_layer,
}


# ---------------------------------------------------------------------------------------------
# report


def markdown(results: dict) -> str:
    lines = ["# hyperconn GPU check", ""]
    env = results.get("env", {})
    lines += [f"Device: **{env.get('device', '?')}**, torch {env.get('torch', '?')}, CUDA {env.get('cuda', '?')}, "
              f"triton {env.get('triton', '?')}; blocks {env.get('blocks', '?')}.", "",
              f"Command: `{results.get('command', '')}`", ""]
    for name in STAGES:
        if name == "env" or name not in results:
            continue
        lines += [f"## {name}", "", "```", json.dumps(_strip(results[name]), indent=1), "```", ""]
    return "\n".join(lines)


def _strip(obj):
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k != "traceback"}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="JSON result path (a .md summary is written beside)")
    parser.add_argument("--stages", default=",".join(STAGES), help=f"comma list of {', '.join(STAGES)}")
    parser.add_argument("--budget", type=float, default=420.0,
                        help="seconds after which no new stage (or layer case / step run) starts")
    parser.add_argument("--reps", type=int, default=20, help="timed repeats per layer contender")
    parser.add_argument("--layers", type=int, default=8, help="qwen3-0.6b layers in the step stage (28 in full)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=2048)
    parser.add_argument("--step-reps", type=int, default=10)
    parser.add_argument("--keep-blocks", action="store_true",
                        help="keep the default block sizes after the sweep (else the fastest are used)")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny sizes on CPU under TRITON_INTERPRET=1: checks this script, measures nothing")
    args = parser.parse_args(argv)
    if args.smoke:
        if not kernels.interpreter_active():
            parser.error("--smoke needs TRITON_INTERPRET=1 in the environment")
        SIZES.update(SMOKE_SIZES)
        args.reps, args.step_reps, args.layers, args.batch, args.seq = 2, 2, 2, 2, 16
        global SWEEP
        SWEEP = SWEEP[:2]
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        parser.error(f"unknown stage(s) {unknown}; choose from {', '.join(STAGES)}")
    if SIZES["device"] == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device", file=sys.stderr)
        return 2
    args.t0 = time.monotonic()
    results = {"command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])])}
    for name in stages:
        elapsed = time.monotonic() - args.t0
        if elapsed > args.budget:
            results[name] = {"skipped": f"time budget ({elapsed:.0f} s > {args.budget:.0f} s)"}
            print(f"[{name}] skipped (time budget)", flush=True)
            continue
        print(f"[{name}] (t = {elapsed:.0f} s)", flush=True)
        start = time.monotonic()
        try:
            results[name] = STAGES[name](args, results)
        except Exception as e:  # noqa: BLE001 -- one stage failing must not lose the others
            results[name] = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
            print(results[name]["traceback"], flush=True)
        results[name + "_seconds"] = round(time.monotonic() - start, 1)
        if name == "env":
            print("  " + json.dumps(results[name]), flush=True)
        write_json(args.out, results, indent=1, default=str)  # partial results survive a kill
        atomic_write_text(args.out.with_suffix(".md"), markdown(results))
    print(f"total {time.monotonic() - args.t0:.0f} s; wrote {args.out} and {args.out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
