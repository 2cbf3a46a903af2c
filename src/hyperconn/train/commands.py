"""``hyperconn train``, ``eval``, ``generate``, ``export`` (:mod:`.export`) and ``plan`` (:mod:`.plan`)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def register(subparsers) -> None:
    from ..connections import available_connections
    from ..model import available_presets
    from ..vocabulary import add_renamed_flag

    p = subparsers.add_parser(
        "train",
        help="train a language model with any connection",
        description="Train a language model. Settings come from the preset, then --config FILE, then the "
        "flags below, then --set section.key=value overrides (e.g. --set train.lr=1e-3 "
        "--set model.connection.options.sigma_bias=2). --set values and --config files are read as YAML 1.2: "
        "booleans are only true/false (yes/no/on/off are strings, refused where a boolean is expected); "
        "quote a string that would read as a number (--set 'train.out_dir=\"123\"').",
    )
    p.add_argument("--preset", choices=None, help=f"model + training preset: {', '.join(available_presets())}")
    p.add_argument("--kind", help=f"connection kind: {', '.join(available_connections())}")
    p.add_argument("--num-streams", type=int, help="number of residual streams n (residual: 1)")
    add_renamed_flag(p, "--connection")
    add_renamed_flag(p, "--streams", type=int)
    p.add_argument("--steps", type=int, help="optimiser steps")
    p.add_argument("--seed", type=int, help="seed of the initialisation and the batches")
    p.add_argument("--out", help="run directory (default runs/<preset>-<kind>-n<num_streams>-s<seed>)")
    p.add_argument(
        "--init-from",
        metavar="hf:DIR",
        help="continue training a local Hugging Face checkpoint, converted to --kind with its own tokenizer",
    )
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    p.add_argument("--config", help="YAML config file (see configs/)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any setting by its dotted path; repeatable; VALUE is YAML 1.2 (true/false, 1e-3, null)",
    )
    p.set_defaults(func=_train)

    p = subparsers.add_parser("eval", help="validation loss and bits per byte of a run's latest checkpoint")
    p.add_argument("run", help="run directory")
    p.add_argument("--batches", type=int, default=None, help="cap on validation batches (default: all)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:<index> or mps")
    p.set_defaults(func=_eval)

    p = subparsers.add_parser("generate", help="sample text from a trained run")
    p.add_argument("run", help="run directory")
    p.add_argument("--prompt", required=True)
    p.add_argument("--max-new-tokens", type=int, default=200)
    p.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:<index> or mps")
    p.set_defaults(func=_generate)

    from .export import register as register_export
    from .plan import register as register_plan

    register_export(subparsers)
    register_plan(subparsers)


def _train(args) -> int:
    from .config import build_config
    from .config_io import read_saved_config
    from .metrics import read_metrics
    from .rundir import CONFIG
    from .trainer import NonFiniteLossError, train

    flags = dict(
        kind=args.kind,
        num_streams=args.num_streams,
        steps=args.steps,
        seed=args.seed,
        out=args.out,
        init_from=args.init_from,
    )

    def resolve(base=None):
        return build_config(args.preset, args.config, args.overrides, base=base, **flags)

    cfg = None if args.out else resolve()  # resolved (and validated) once when it names the run directory
    run_dir = Path(args.out) if args.out else cfg.run_dir
    # on resume, continue from the run's own config (the preset's defaults need not validate with the
    # flags given now, e.g. --steps below the preset's warm-up); flags and overrides still apply on top
    saved = run_dir / CONFIG
    if args.resume and saved.is_file():
        cfg = resolve(read_saved_config(saved))
    elif cfg is None:
        cfg = resolve()
    try:
        run_dir = train(cfg, resume=args.resume, overwrite=args.overwrite)
    except NonFiniteLossError as err:
        print(f"hyperconn train: error: {err}", file=sys.stderr)
        return 1
    except RuntimeError as err:
        line = collective_failure(err)
        if line is None:
            raise
        print(f"hyperconn train: error: {line}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        return 130
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    evals = [r for r in read_metrics(run_dir) if r["val_loss"] is not None]
    print(f"run: {run_dir}")
    print("validation loss (nats/token) and bits per byte:")
    for r in evals:
        print(f"  step {r['step']:6d}  val_loss {r['val_loss']:.4f}  val_bpb {r['val_bpb']:.4f}")
    return 0


def collective_failure(err: BaseException) -> str | None:
    """One line for a collective that failed because another rank died (kill -9, OOM, a crash):
    which rank saw it and the backend's first line, instead of a traceback per frame. None when
    ``err`` is something else (a bug keeps its traceback)."""
    import torch.distributed as dist

    text = str(err).strip()
    first = text.splitlines()[0] if text else type(err).__name__
    peer_gone = ("Connection closed by peer", "Connection reset by peer", "Broken pipe", "Socket Timeout",
                 "Timed out", "NCCL communicator was aborted", "connection refused")  # fmt: skip
    backend_error = isinstance(err, getattr(dist, "DistBackendError", ())) or any(p in text for p in peer_gone)
    if not backend_error:
        return None
    rank = os.environ.get("RANK", "?")
    world = os.environ.get("WORLD_SIZE", "?")
    return (
        f"rank {rank} of {world}: a collective with the other ranks failed: another rank died or left "
        f"(its own log names why; torchrun lists its exit code) [{first[:200]}]"
    )


def _eval(args) -> int:
    from .runs import evaluate

    print(json.dumps(evaluate(Path(args.run), args.batches, args.device, device_option="--device")))
    return 0


def _generate(args) -> int:
    import torch

    from .distributed import pick_device
    from .runs import check_run_dir, load_run

    if args.max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    device = pick_device(args.device, 0, option="--device")
    check_run_dir(Path(args.run))
    model, _, tokenizer = load_run(Path(args.run), device)
    ids = tokenizer.encode(args.prompt) or [tokenizer.eos_id]
    idx = torch.tensor([ids], dtype=torch.long, device=device)
    gen = torch.Generator(device=device).manual_seed(args.seed)
    out = model.generate(idx, args.max_new_tokens, args.temperature, args.top_k, generator=gen)
    print(tokenizer.decode(out[0].tolist()))
    return 0
