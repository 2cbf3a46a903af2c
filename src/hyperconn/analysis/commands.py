"""``hyperconn analyze RUN`` and ``hyperconn compare ...``."""

from __future__ import annotations

import sys
from pathlib import Path

from .analyze import DEFAULT_BATCHES
from .analyze_hf import DEFAULT_TOKENS

DEFAULT_KINDS = "residual,hc,mhc,mhc_lite,kromhc,shc"


def _analyze(args) -> int:
    if args.hf is not None:
        from .analyze_hf import analyze_hf

        if args.run is not None or args.text is None:
            raise ValueError("--hf DIR takes --text FILE and no run directory")
        out = args.out or f"analysis-{Path(args.hf).resolve().name}"
        data = analyze_hf(args.hf, args.text, out, tokens=args.tokens, tokenizer=args.tokenizer)
    elif args.run is None:
        raise ValueError("give a run directory, or --hf DIR --text FILE")
    else:
        from .analyze import analyze_run

        out = args.out or args.run
        data = analyze_run(args.run, batches=args.batches, out=out)
    comp = data["summary"]["composite"]
    mean = data["summary"]["mean"]
    structure = (
        f"layer-averaged identity distance {mean['identity_distance']:.4f}, negative mass "
        f"{mean['negative_mass']:.4f}, spectral norm {mean['spectral_norm']:.4f}"
        if mean else "no connection learns an H_res (H_res = I in every one)"
    )
    print(
        f"{data['title']}: {len(data['layers'])} connections; {structure}; composite forward/backward gain (max) "
        f"{comp['forward_gain_max']:.4g}/{comp['backward_gain_max']:.4g}"
    )
    print(invariants_line(data["layers"]))
    print(f"wrote {out}/analysis.md, {out}/analysis.json and plots")
    return 0


INVARIANT_TOLERANCE = 1e-4  # float32 coefficient math: exact invariants hold to ~1e-6


def invariants_line(layers: list[dict]) -> str:
    """One line: the worst violation over every connection of each invariant the kind declares."""
    worst: dict[str, float] = {}
    for layer in layers:
        for name, value in (layer.get("invariants") or {}).items():
            worst[name] = max(worst.get(name, 0.0), value)
    if not worst:
        return "declared invariants: none"
    parts = [
        f"{name} {value:.1e}" + ("" if value <= INVARIANT_TOLERANCE else " VIOLATED") for name, value in worst.items()
    ]
    return "declared invariants, worst violation over tokens and connections: " + ", ".join(parts)


def _csv(text: str) -> tuple[str, ...]:
    return tuple(m.strip() for m in text.split(",") if m.strip())


def _num_streams(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(n) for n in _csv(text))
    except ValueError:
        raise ValueError(
            f"--num-streams must be integers separated by commas (e.g. 4 or 2,4,8), got {text!r}"
        ) from None


def study_from_args(args):
    """The study: a ``--study`` file, or a finished comparison's ``study.json`` (``--report-only``
    without ``--preset``), or the flags; flags given explicitly override the file."""
    from .axes import parse_axis
    from .compare import load_study
    from .study import CompareConfig

    if args.study:
        cfg = CompareConfig.from_file(args.study)
    elif args.preset is None and args.report_only and args.out:
        cfg = load_study(args.out)
    elif args.preset is None:
        raise ValueError(
            "hyperconn compare needs --preset (or --study FILE, or --report-only --out DIR of a comparison)"
        )
    else:
        cfg = CompareConfig(preset=args.preset, kinds=_csv(DEFAULT_KINDS))
    if args.preset is not None:
        cfg.preset = args.preset
    for name, value in (("kinds", args.kinds and _csv(args.kinds)), ("num_streams", args.num_streams and
                        _num_streams(args.num_streams)), ("seeds", args.seeds), ("steps", args.steps),
                        ("analyze_batches", args.batches), ("bench_rounds", args.bench_rounds)):  # fmt: skip
        if value is not None:
            setattr(cfg, name, value)
    if args.out is not None:
        cfg.out = Path(args.out)
    cfg.overrides = (*cfg.overrides, *args.set)
    cfg.axes = (*cfg.axes, *(parse_axis(a) for a in args.axis))
    if args.pairs is not None:
        cfg.pairs = tuple(_csv(args.pairs))
    return cfg.validate()


def _compare(args) -> int:
    from ..demo import overhead_note
    from .compare import run_compare, summary_table

    cfg = study_from_args(args)
    summary = run_compare(cfg, log=lambda msg: print(msg, file=sys.stderr, flush=True), report_only=args.report_only,
                          allow_mixed_commits=args.allow_mixed_commits)  # fmt: skip
    print(summary_table(summary))
    note = overhead_note(cfg, summary)  # which model the overhead column is for
    if note:
        print(note)
    print(f"\nreport: {cfg.out / 'report.md'}")
    return 0


def register(subparsers) -> None:
    from ..vocabulary import add_renamed_flag

    p = subparsers.add_parser(
        "analyze",
        help="diagnostics of a trained run's mixing matrices (analysis.json, analysis.md, plots)",
    )
    p.add_argument("run", nargs="?", default=None, help="run directory written by `hyperconn train` (omit with --hf)")
    p.add_argument("--batches", type=int, default=DEFAULT_BATCHES, help="validation batches to run")
    p.add_argument("--out", default=None, help="output folder (default: the run directory)")
    p.add_argument("--hf", default=None, metavar="DIR",
                   help="a local DeepSeek-V4 checkpoint directory: read its own hyper-connections")
    p.add_argument("--text", default=None, metavar="FILE", help="with --hf: a local text file run through the model")
    p.add_argument("--tokens", type=int, default=DEFAULT_TOKENS,
                   help="with --hf: tokens to run in all (windows spread over the text)")
    p.add_argument("--tokenizer", default=None,
                   help="with --hf: tokenizer directory or tokenizer.json, when DIR has none")
    p.set_defaults(func=_analyze)

    p = subparsers.add_parser(
        "compare",
        help="train every run of a study (kinds x num_streams x axis values x seeds), analyse each, "
        "write report.md + summary.json",
        description="Runs are named <kind>-n<num_streams>[-<axis><value>...]-s<seed>. A finished run is reused only "
        "if its resolved config equals what is asked (logging/progress/threads/device/compile settings "
        "aside); otherwise nothing trains and the differing keys are named.",
    )
    p.add_argument("--preset", default=None)
    p.add_argument("--study", default=None, metavar="FILE",
                   help="YAML study spec: preset, kinds, num_streams, seeds, steps, out, set, axes, batches, "
                   "bench_rounds (flags given as well override it)")
    p.add_argument("--kinds", default=None, help=f"comma-separated connection kinds (default {DEFAULT_KINDS})")
    p.add_argument("--num-streams", default=None, help="n for every kind but residual (n = 1); a list (2,4,8) "
                   "makes n an axis (default 4)")
    add_renamed_flag(p, "--methods")
    add_renamed_flag(p, "--streams")
    p.add_argument("--seeds", type=int, default=None, help="seeds 0..K-1 per group (default 1)")
    p.add_argument("--out", default=None, help="folder for the runs and the report")
    p.add_argument("--steps", type=int, default=None, help="training steps (default: the preset's)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="trainer config override applied to every run (repeatable)")
    p.add_argument("--axis", action="append", default=[], metavar="[KINDS:]SECTION.KEY=V1,V2",
                   help="sweep a setting, e.g. shc:model.connection.options.sigma_bias=1.0,2.0 or "
                   "train.lr_scale=0.5,1,2 (scales lr and min_lr); repeatable, runs take every combination")
    p.add_argument("--batches", type=int, default=None, help=f"validation batches per analysis ({DEFAULT_BATCHES})")
    p.add_argument("--bench-rounds", type=int, default=None,
                   help="rounds of the interleaved throughput measurement after training (0: skip; default 5)")
    p.add_argument("--pairs", default=None, metavar="A:B,C:D",
                   help="the pairs of groups the Holm correction covers, named as in the report (e.g. "
                   "mhc-n4:shc-n4); other pairs are listed with their uncorrected p and no verdict "
                   "(default: every pair)")
    p.add_argument("--report-only", action="store_true",
                   help="train nothing: re-render report.md/summary.json from the runs on disk")
    p.add_argument("--allow-mixed-commits", action="store_true",
                   help="combine runs trained by different commits (or by another commit than this code) "
                   "in one study; refused by default (a run without provenance.json counts as commit 'unknown')")
    p.set_defaults(func=_compare)
