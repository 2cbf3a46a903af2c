"""``shc analyze RUN`` and ``shc compare ...``."""

from __future__ import annotations

import sys

from .analyze import DEFAULT_BATCHES


def _analyze(args) -> int:
    from .analyze import analyze_run

    out = args.out or args.run
    data = analyze_run(args.run, batches=args.batches, out=out)
    comp = data["summary"]["composite"]
    mean = data["summary"]["mean"]
    print(
        f"{data['title']}: {len(data['layers'])} connections; layer-averaged identity distance "
        f"{mean['identity_distance']:.4f}, negative mass {mean['negative_mass']:.4f}, "
        f"spectral norm {mean['spectral_norm']:.4f}; composite forward/backward gain (max) "
        f"{comp['forward_gain_max']:.4g}/{comp['backward_gain_max']:.4g}"
    )
    print(f"wrote {out}/analysis.md, {out}/analysis.json and plots")
    return 0


def _methods(text: str) -> tuple[str, ...]:
    return tuple(m.strip() for m in text.split(",") if m.strip())


def _compare(args) -> int:
    from .compare import CompareConfig, run_compare, summary_table

    cfg = CompareConfig(
        preset=args.preset,
        methods=_methods(args.methods),
        streams=args.streams,
        seeds=args.seeds,
        out=args.out,
        steps=args.steps,
        overrides=tuple(args.set),
        analyze_batches=args.batches,
        bench_rounds=args.bench_rounds,
    ).validate()
    summary = run_compare(cfg, log=lambda msg: print(msg, file=sys.stderr, flush=True))
    print(summary_table(summary, cfg.methods))
    print(f"\nreport: {cfg.out / 'report.md'}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "analyze",
        help="diagnostics of a trained run's mixing matrices (analysis.json, analysis.md, plots)",
    )
    p.add_argument("run", help="run directory written by `shc train`")
    p.add_argument("--batches", type=int, default=DEFAULT_BATCHES, help="validation batches to run")
    p.add_argument("--out", default=None, help="output folder (default: the run directory)")
    p.set_defaults(func=_analyze)

    p = subparsers.add_parser(
        "compare",
        help="train every method x seed on one preset, analyse each run, write report.md + summary.json",
    )
    p.add_argument("--preset", required=True)
    p.add_argument("--methods", default="residual,hc,mhc,mhc_lite,kromhc,shc", help="comma-separated kinds")
    p.add_argument("--streams", type=int, default=4, help="n for every method but residual (n = 1)")
    p.add_argument("--seeds", type=int, default=1, help="seeds 0..K-1 per method")
    p.add_argument("--out", required=True, help="folder for the runs and the report")
    p.add_argument("--steps", type=int, default=None, help="training steps (default: the preset's)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="trainer config override applied to every run (repeatable)")
    p.add_argument("--batches", type=int, default=DEFAULT_BATCHES, help="validation batches per analysis")
    p.add_argument("--bench-rounds", type=int, default=5,
                   help="rounds of the interleaved throughput measurement after training (0: skip)")
    p.set_defaults(func=_compare)
