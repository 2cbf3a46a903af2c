"""Two CPU processes (gloo), launched ONCE for the whole module (a spawn per case would dominate
the time): the trainer under DDP and FSDP2 keeps the ranks identical across a resume; every kind
trains under DDP at n in {2, 4}; the FSDP build (meta -> shard -> per-rank init) starts from
exactly the plain build's values while holding only its shard; an FSDP model and optimizer state,
gathered and loaded into a model built from another seed, gives the same parameters and the same
next step."""

from __future__ import annotations

import io
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from tests.support import MICRO, TINY

from hyperconn.train import TrainConfig, Trainer, build_config, read_metrics
from hyperconn.train.build import build_model, build_plain
from hyperconn.train.distributed import DistInfo
from hyperconn.train.loss import lm_loss
from hyperconn.train.optim import build_optimizer
from hyperconn.train.parallel import DataParallel, build_sharded

pytestmark = pytest.mark.slow  # every test shares a two-process launch

# every kind at n in {2, 4} (residual: n = 1) under DDP; the kinds FSDP2 can shard (HC's scalar
# gates are 0-d parameters, which fully_shard refuses)
DDP_CASES = [("residual", 1)] + [(k, n) for k in ("hc", "mhc", "mhc_lite", "kromhc", "shc") for n in (2, 4)]
FSDP_CASES = [("shc", 4), ("shc", 2), ("mhc", 4), ("kromhc", 2), ("hc", 3), ("residual", 1)]
TRAINER_RUN = ["train.steps=3", "train.eval_interval=3", "train.checkpoint_interval=3", "train.grad_accum=2"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tiny_cfg(kind: str, streams: int, fsdp: bool, seed: int = 3) -> TrainConfig:
    model = {**TINY, "connection": {"kind": kind, "num_streams": streams}}
    train = {"seed": seed, "fsdp": fsdp, "seq_len": 8, "steps": 3, "warmup_steps": 1}
    return TrainConfig.from_dict({"preset": "demo", "model": model, "train": train}).validate()


def _full_params(model) -> torch.Tensor:
    params = [p.detach() for p in model.parameters()]
    return torch.cat([(p.full_tensor() if hasattr(p, "full_tensor") else p).flatten() for p in params])


def _ranks_equal(flat: torch.Tensor, world: int) -> bool:
    gathered = [torch.empty_like(flat) for _ in range(world)]
    dist.all_gather(gathered, flat)
    return all(torch.equal(gathered[0], g) for g in gathered[1:])


def _trainer_runs(cfgs: dict[str, dict], world: int, results: dict) -> None:
    """3 steps, then resumed from the step-3 checkpoint up to step 4, under DDP and FSDP2."""
    for name, cfg_dict in cfgs.items():
        Trainer(TrainConfig.from_dict(cfg_dict)).fit()
        cfg_dict["train"]["steps"] = 4
        trainer = Trainer(TrainConfig.from_dict(cfg_dict), resume=True)
        trainer.fit()
        results[f"trainer {name}"] = (_ranks_equal(_full_params(trainer.raw_model), world), True)


def _every_kind_under_ddp(info: DistInfo, results: dict) -> None:
    for kind, n in DDP_CASES:  # three steps: an unused parameter fails DDP at the second
        raw, model = build_model(_tiny_cfg(kind, n, fsdp=False), DataParallel(info, fsdp=False))
        start = _full_params(raw)
        optimizer = build_optimizer(raw, 1e-2, (0.9, 0.95), 0.1)
        for step in range(3):  # each rank its own batch: equal weights need the gradient all-reduce
            _step(model, optimizer, 10 * step + info.rank)
        flat = _full_params(raw)
        results[f"ddp {kind} n={n}"] = (_ranks_equal(flat, info.world_size), not torch.equal(flat, start))


def _step(model, optimizer, seed: int) -> None:
    tokens = torch.randint(0, 32, (2, 9), generator=torch.Generator().manual_seed(seed))
    lm_loss(model, tokens[:, :-1], tokens[:, 1:]).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def _fsdp_builds(info: DistInfo, results: dict) -> None:
    parallel = DataParallel(info, fsdp=True)
    for kind, n in FSDP_CASES:
        cfg = _tiny_cfg(kind, n, fsdp=True)
        sharded = build_sharded(cfg, info)
        full = parallel.model_state(sharded)  # rank 0's: gathered, the checkpoint's keys
        plain = build_plain(cfg, cfg.train.seed).state_dict()
        same = full.keys() == plain.keys() and all(torch.equal(full[k], plain[k]) for k in plain)
        if info.rank != 0:
            same = full == {}  # only rank 0 receives the gathered state
        local = sharded.embed.weight.to_local().numel()  # this rank holds half the rows
        results[f"fsdp {kind} n={n}"] = (same, local == plain["embed.weight"].numel() // info.world_size)


def _as_read_back(value):
    """``value`` after ``torch.save`` and ``torch.load(weights_only=True)``, as a checkpoint reads."""
    buffer = io.BytesIO()
    torch.save(value, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def _fsdp_state_round_trip(info: DistInfo, results: dict) -> None:
    """Two steps, the full states gathered (rank 0) and handed to every rank (as each reads the
    checkpoint), loaded into a sharded model and optimizer built from another seed."""
    parallel = DataParallel(info, fsdp=True)
    model = build_sharded(_tiny_cfg("shc", 2, fsdp=True), info)
    optimizer = build_optimizer(model, 1e-2, (0.9, 0.95), 0.1)
    for step in range(2):
        _step(model, optimizer, 10 * step + info.rank)
    payload = [parallel.model_state(model), parallel.optimizer_state(model, optimizer)]
    dist.broadcast_object_list(payload, src=0)
    weights, optim_state = _as_read_back(payload)  # not rank 0's live tensors (its step counters)
    other = build_sharded(_tiny_cfg("shc", 2, fsdp=True, seed=4), info)
    other_opt = build_optimizer(other, 1e-2, (0.9, 0.95), 0.1)
    differed = not torch.equal(_full_params(model), _full_params(other))
    parallel.check_optimizer_state(other, other_opt, optim_state)  # the gathered state fits
    parallel.load_model_state(other, weights, "gathered")
    parallel.load_optimizer_state(other, other_opt, optim_state)
    same = differed and torch.equal(_full_params(model), _full_params(other))
    _step(model, optimizer, 50 + info.rank)
    _step(other, other_opt, 50 + info.rank)
    results["fsdp state round trip"] = (same, torch.equal(_full_params(model), _full_params(other)))
    bad = {**optim_state, "state": dict(optim_state["state"])}
    name = next(iter(bad["state"]))
    bad["state"][name] = {**bad["state"][name], "exp_avg": torch.zeros(3)}
    try:
        parallel.check_optimizer_state(other, other_opt, bad)
        refused = False
    except ValueError as err:
        refused = f"parameter {name!r} has shape (3,)" in str(err)
    results["fsdp optimizer check"] = (isinstance(name, str), refused)


def _worker(rank: int, world: int, port: int, trainer_cfgs: dict, out: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    results: dict[str, tuple[bool, bool]] = {}
    try:
        _trainer_runs(trainer_cfgs, world, results)
        info = DistInfo(rank, rank, world, torch.device("cpu"))
        _every_kind_under_ddp(info, results)
        _fsdp_builds(info, results)
        _fsdp_state_round_trip(info, results)
    finally:
        dist.destroy_process_group()
    if rank == 0:
        torch.save(results, out)


@pytest.fixture(scope="module")
def launched(corpus, cache_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("dist")
    sets = [f"data.source={corpus}", f"data.cache_dir={cache_dir}", *MICRO, *TRAINER_RUN]
    runs = {"ddp": ["train.fsdp=false"], "fsdp2": ["train.fsdp=true"],
            "ddp-compiled": ["train.fsdp=false", "train.compile=true"]}  # fmt: skip
    cfgs = {name: build_config("demo", overrides=[*sets, *extra], out=str(root / name)).to_dict()
            for name, extra in runs.items()}  # fmt: skip
    # spawned children import this module by the name pytest gave it: put its root on their path
    top = str(Path(__file__).resolve().parents[_worker.__module__.count(".")])
    with pytest.MonkeyPatch.context() as mp_ctx:
        mp_ctx.syspath_prepend(top)  # spawn hands the parent's sys.path to the children
        mp.spawn(_worker, args=(2, _free_port(), cfgs, str(root / "results.pt")), nprocs=2, join=True)
    return root, torch.load(root / "results.pt")


@pytest.mark.parametrize("name", ["ddp", "fsdp2", "ddp-compiled"])  # compiled: the blocks in place, DDP around
def test_the_trainer_keeps_two_ranks_in_sync_across_a_resume(launched, name):
    root, results = launched
    assert results[f"trainer {name}"][0], "ranks differ"
    run = root / name
    rows = [r for r in read_metrics(run) if r["loss"] is not None]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert rows[-1]["tokens"] == 4 * 2 * 2 * 4 * 16  # steps x ranks x accum x batch x seq
    assert (run / "DONE").is_file()
    if name == "ddp-compiled":  # the same run as "ddp" but compiled: its losses to rounding
        eager = [r["loss"] for r in read_metrics(root / "ddp") if r["loss"] is not None]
        assert [r["loss"] for r in rows] == pytest.approx(eager, rel=1e-4)


@pytest.mark.parametrize(("kind", "n"), DDP_CASES)
def test_every_kind_trains_under_ddp(launched, kind, n):
    in_sync, moved = launched[1][f"ddp {kind} n={n}"]
    assert in_sync, "ranks differ after 3 DDP steps"
    assert moved, "the parameters did not change"


@pytest.mark.parametrize(("kind", "n"), FSDP_CASES)
def test_the_fsdp_build_equals_the_plain_build_and_is_sharded(launched, kind, n):
    same, sharded = launched[1][f"fsdp {kind} n={n}"]
    assert same, "the FSDP-built model's full state differs from the plain build with the same seed"
    assert sharded, "a rank holds more than its shard of the embedding"


def test_an_fsdp_state_reloads_to_the_same_parameters_and_next_step(launched):
    same, same_next = launched[1]["fsdp state round trip"]
    assert same, "the gathered FSDP state, loaded into a model built from another seed, gives other parameters"
    assert same_next, "the step after loading differs: the optimizer state did not round-trip"


def test_the_fsdp_optimizer_state_is_checked_by_parameter_name(launched):
    by_name, refused = launched[1]["fsdp optimizer check"]
    assert by_name, "the gathered FSDP optimizer state is not keyed by parameter name"
    assert refused, "an FSDP optimizer state with a wrong moment shape was not refused by name"
