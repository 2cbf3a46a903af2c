"""Run a study's jobs: train (or resume, or reuse) every run, analyse it, and probe each group's
training-step throughput and activation memory with ``hyperconn.bench.timing``.

Everything here writes into the study folder (the runs, ``throughput.json``, ``memory.json``) and
returns nothing the report needs: :mod:`.summarise` reads it all back from disk.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from ..fileio import write_json
from .analyze import analyze_run
from .study import Job, config_differences

BENCH_STEPS = 2  # training steps per timed call of the throughput probe
PROBE_SEED = 0


class RunMismatchError(ValueError):
    """A run directory holds a run trained with other settings than the study asks for."""


def check_reuse(jobs: Sequence[Job]) -> None:
    """Refuse (before anything trains) if any existing run's config differs from its job's."""
    from ..train import load_config

    problems = []
    for job in jobs:
        saved = job.run_dir / "config.yaml"
        if saved.exists():
            try:
                diffs = config_differences(load_config(saved), job.config)
            except Exception as err:  # a corrupt or foreign config.yaml: never reuse, never overwrite
                diffs = [f"unreadable config.yaml ({type(err).__name__}: {err})"]
            if diffs:
                problems.append(f"{job.run_dir}:\n    " + "\n    ".join(diffs))
    if problems:
        raise RunMismatchError(
            "refusing to mix runs trained with different settings into one report; these run directories "
            "hold runs whose resolved config differs from what this invocation asks for (use another --out, "
            "or the flags those runs were trained with):\n  " + "\n  ".join(problems)
        )


def run_jobs(
    jobs: Sequence[Job],
    analyze_batches: int,
    log: Callable[[str], None] = print,
    after_each: Callable[[], None] | None = None,
) -> None:
    """Train every unfinished run (resuming interrupted ones), then analyse it if its analysis is
    missing or older than its metrics. ``after_each`` is called after every run (interim reports)."""
    from .. import train as trainer

    check_reuse(jobs)
    for job in jobs:
        name = job.run_dir.name
        if trainer.is_finished(job.run_dir):
            log(f"[compare] {name}: finished, reused")
        else:
            resume = (job.run_dir / "config.yaml").exists()
            log(f"[compare] {name}: {'resuming' if resume else 'training'}")
            t0 = time.time()
            trainer.train(job.config, resume=resume)
            log(f"[compare] {name}: trained in {time.time() - t0:.0f} s")
        analysis = job.run_dir / "analysis.json"
        if not analysis.exists() or analysis.stat().st_mtime < (job.run_dir / "metrics.csv").stat().st_mtime:
            analyze_run(job.run_dir, batches=analyze_batches)
        if after_each is not None:
            after_each()


# --- probes ------------------------------------------------------------------------------------


def probe_runs(jobs: Sequence[Job]) -> dict[str, Path]:
    """One run directory per group (its lowest seed) whose config the probes rebuild models from."""
    groups: dict[str, Path] = {}
    for job in sorted(jobs, key=lambda j: j.spec.seed):
        groups.setdefault(job.spec.group, job.run_dir)
    return groups


def _setup(run_dir: Path):
    from ..model import LanguageModel
    from ..train import load_config

    cfg = load_config(run_dir / "config.yaml")
    torch.manual_seed(PROBE_SEED)
    model = LanguageModel(cfg.model).train()
    tokens = torch.randint(0, cfg.model.vocab_size, (cfg.train.batch_size, cfg.train.seq_len + 1))
    return cfg, model, tokens[:, :-1], tokens[:, 1:]


def measure_throughput(groups: dict[str, Path], rounds: int) -> dict:
    """Training-step tokens/s of every group, side by side in this process.

    Each group's model is built from its run's ``config.yaml`` (random weights, AdamW, the run's
    precision on the CPU); :func:`hyperconn.bench.timing.interleaved_medians` runs one warm-up call each,
    then ``rounds`` rounds of one call per group in a rotating order, a call being ``BENCH_STEPS``
    steps (forward, loss, backward, optimiser) on one random batch of the run's shape.
    """
    from ..bench.timing import interleaved_medians
    from ..train.step import train_step

    contenders, shapes, threads = {}, {}, None
    for group, run_dir in groups.items():
        cfg, model, x, y = _setup(run_dir)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        threads = cfg.train.threads if cfg.train.threads is not None else threads
        shapes[group] = (cfg.train.batch_size, cfg.train.seq_len)

        def call(model=model, opt=opt, x=x, y=y, precision=cfg.train.precision) -> None:
            for _ in range(BENCH_STEPS):
                train_step(model, opt, [(x, y)], precision=precision)

        contenders[group] = call
    if threads is not None:
        torch.set_num_threads(threads)  # as the runs trained
    timed = interleaved_medians(contenders, repeats=rounds, warmup=1)
    return {
        "rounds": rounds,
        "steps_per_call": BENCH_STEPS,
        "threads": torch.get_num_threads(),
        "groups": {
            g: {
                **t,
                "batch": list(shapes[g]),
                "tokens_per_s": BENCH_STEPS * shapes[g][0] * shapes[g][1] / (t["median_ms"] / 1e3),
            }
            for g, t in timed.items()
        },  # fmt: skip
    }


def measure_memory(groups: dict[str, Path]) -> dict:
    """Per group: MB autograd saves for backward in one forward + loss of the run's batch
    (:func:`hyperconn.bench.timing.saved_activation_bytes`) and MB of parameters + gradients + AdamW
    state (16 bytes per float32 parameter)."""
    from ..bench.timing import saved_activation_bytes
    from ..train.loss import lm_loss

    out = {}
    for group, run_dir in groups.items():
        cfg, model, x, y = _setup(run_dir)
        params = sum(p.numel() for p in model.parameters())
        out[group] = {
            "activations_mb": saved_activation_bytes(lambda model=model, x=x, y=y: lm_loss(model, x, y)) / 2**20,
            "params_grads_adam_mb": 16 * params / 2**20,
            "batch": [cfg.train.batch_size, cfg.train.seq_len],
        }
    return {"groups": out}


def _current(path: Path, groups: dict[str, Path], **expect) -> bool:
    if not path.exists():
        return False
    saved = json.loads(path.read_text())
    return set(saved.get("groups", {})) == set(groups) and all(saved.get(k) == v for k, v in expect.items())


def run_probes(out: Path, jobs: Sequence[Job], bench_rounds: int, log: Callable[[str], None] = print) -> None:
    """``out/throughput.json`` (if ``bench_rounds``) and ``out/memory.json``, unless current."""
    groups = probe_runs(jobs)
    if bench_rounds and not _current(out / "throughput.json", groups, rounds=bench_rounds):
        log(f"[compare] interleaved throughput: {bench_rounds} rounds x {BENCH_STEPS} steps per group")
        write_json(out / "throughput.json", measure_throughput(groups, bench_rounds), indent=2)
    if not _current(out / "memory.json", groups):
        log("[compare] memory: activations saved for backward, per group")
        write_json(out / "memory.json", measure_memory(groups), indent=2)
