"""Tensor + sequence parallelism, pipeline stages and sharded checkpoints across layouts, on two CPU
processes (gloo) launched ONCE for the module:

- for residual (n = 1), mhc and shc (n = 4): TP = 2 and PP = 2 (GPipe and 1F1B) give the one-process losses of 5
  steps (gradient clipping active, 2 micro-batches) and the same weights after the first optimizer
  step and after the fifth; so do TP = 2 x DP = 2 (DDP-style, and FSDP2 over dp: a 2-D mesh) and
  PP = 2 x DP = 2 on four processes (a second launch), against one process that takes both
  data-parallel ranks' micro-batches;
- the trainer under TP = 2, PP = 2 and FSDP2 writes sharded checkpoints; the TP run resumed from
  its step-2 checkpoint under DDP on the same 2 ranks starts from exactly that checkpoint's
  weights; in this (one) process, the TP and PP runs resumed from step 2 repeat the losses of an
  uninterrupted one-process run, and the FSDP2 run resumes on one process from exactly its
  checkpoint's weights.

Tolerance (fp32): the ranks sum the same terms in another order (a reduce-scatter, an all-reduce
of partial gradients), so losses agree to ``rel 1e-5`` and weights to ``abs 1e-4`` after one step
and ``abs 5e-4`` after five, against AdamW steps of lr = 1e-2: AdamW's update is
``lr m / (sqrt(v) + eps)``, so for a gradient near ``eps`` a last-bit difference of the gradient
becomes a visible one of the update (measured: losses equal to 1e-7, weights within 1.5e-5 after
one step and 4e-5 after five).
"""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from tests.support import MICRO, TINY

from hyperconn.train import TrainConfig, Trainer, build_config, read_metrics, train
from hyperconn.train.build import build_plain
from hyperconn.train.checkpoint import list_checkpoints
from hyperconn.train.distributed import DistInfo
from hyperconn.train.layout import make_layout
from hyperconn.train.optim import build_optimizer
from hyperconn.train.pipeline import build_pipeline
from hyperconn.train.sharded_checkpoint import consolidate, is_sharded
from hyperconn.train.step import apply_update, backward_step
from hyperconn.train.tensor_parallel import build_tensor_parallel

pytestmark = pytest.mark.slow  # every test shares a two-process launch

KINDS = [("residual", 1), ("mhc", 4), ("shc", 4)]
MODEL = {**TINY, "n_kv_heads": 2}  # tp = 2 needs the kv heads to divide
STEPS, ACCUM, CLIP = 5, 2, 0.5
LOSS_REL, W1_ABS, W5_ABS = 1e-5, 1e-4, 5e-4
LAYOUT_RUN = ["model.n_kv_heads=2", "train.steps=5", "train.checkpoint_interval=2", "train.keep_checkpoints=5",
              "train.eval_interval=5", "train.grad_accum=2"]  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cfg(kind: str, n: int, tied: bool = False, **train) -> TrainConfig:
    model = {**MODEL, "tie_embeddings": tied, "connection": {"kind": kind, "num_streams": n}}
    settings = {"seed": 3, "seq_len": 8, "steps": STEPS, "warmup_steps": 1, "grad_accum": ACCUM, **train}
    return TrainConfig.from_dict({"preset": "demo", "model": model, "train": settings}).validate()


def _micro_batches(step: int, dp: int = 1, dp_rank: int = 0):
    """Step ``step``'s micro-batches of data-parallel rank ``dp_rank`` of ``dp`` (``dp=1``: all)."""
    out = []
    for m in range(dp_rank * ACCUM, (dp_rank + 1) * ACCUM):
        tokens = torch.randint(0, 32, (2, 9), generator=torch.Generator().manual_seed(100 * step + m))
        out.append((tokens[:, :-1], tokens[:, 1:]))
    return out


def _reference(kind: str, n: int, dp: int = 1, tied: bool = False) -> tuple[list[float], dict, dict]:
    """One process: 5 steps' losses, the weights after step 1 and after step 5; ``dp``: the
    micro-batches of ``dp`` data-parallel ranks, all of them (the mean loss, the mean gradient)."""
    model = build_plain(_cfg(kind, n, tied), 3)
    optimizer = build_optimizer(model, 1e-2, (0.9, 0.95), 0.1)
    losses, first = [], None
    for step in range(STEPS):
        batches = [b for r in range(dp) for b in _micro_batches(step, dp, r)]
        loss, _ = backward_step(model, batches, grad_clip=CLIP)
        apply_update(optimizer)
        losses.append(loss.item())
        if step == 0:
            first = {k: v.clone() for k, v in model.state_dict().items()}
    return losses, first, dict(model.state_dict())


def _full_weights(raw, pipelined: bool) -> dict:
    """The whole model's weights on every rank (TP: DTensors gathered; PP: the stages' parts)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    if not pipelined:  # clones: a replicated (plain) parameter comes back as the live tensor
        full = get_model_state_dict(raw, options=StateDictOptions(full_state_dict=True))
        return {k: v.detach().clone() for k, v in full.items()}
    stage = get_model_state_dict(raw, options=StateDictOptions(full_state_dict=True))  # FSDP: gathered over dp
    parts = [None] * dist.get_world_size()
    dist.all_gather_object(parts, {k: v.detach().clone() for k, v in stage.items()})
    return {k: v for part in parts for k, v in part.items()}


def _layout_steps(kind: str, n: int, how: str, rank: int, world: int = 2) -> tuple[list[float], dict, dict]:
    """5 steps under ``how`` (``tp``, ``pp`` and their variants; ``tp-pp``: both; the rest of the
    world data-parallel): the mean loss over the data-parallel ranks, the whole weights after step 1
    and after step 5 (every rank)."""
    pipelined = "pp" in how
    settings = {"fsdp": how.endswith("fsdp"), "tied": how == "tp-tied"}
    if how.startswith("tp"):
        settings["tensor_parallel"] = 2
    if pipelined:
        settings.update(pipeline_parallel=2, pipeline_schedule="1f1b" if how == "pp-1f1b" else "gpipe")
    cfg = _cfg(kind, n, **settings)
    info = DistInfo(rank, rank, world, torch.device("cpu"))
    layout = make_layout(cfg.train, info, cfg.model)
    raw, model = (build_pipeline if pipelined else build_tensor_parallel)(cfg, layout, info.device)
    optimizer = build_optimizer(raw, 1e-2, (0.9, 0.95), 0.1)
    losses, first = [], None
    for step in range(STEPS):
        batches = _micro_batches(step, layout.dp, layout.dp_rank)
        if pipelined:
            loss, _ = model.forward_backward(batches, "fp32", CLIP)
        else:
            loss, _ = backward_step(model, batches, grad_clip=CLIP, grad_sync=model)
        apply_update(optimizer)
        mean = loss.detach().clone()
        dist.all_reduce(mean)  # the same on the tp / pp ranks of one dp coordinate
        losses.append(mean.item() / world)
        if step == 0:
            first = _full_weights(raw, pipelined)
    return losses, first, _full_weights(raw, pipelined)


def _trainer_runs(cfgs: dict, rank: int, results: dict) -> None:
    """TP, PP and FSDP2 runs (sharded checkpoints); then the TP run from step 2 under DDP on 2 ranks."""
    for cfg_dict in cfgs.values():
        train(TrainConfig.from_dict(cfg_dict))
    tp_dir = Path(cfgs["tp"]["train"]["out_dir"])
    ddp_dir = tp_dir.with_name("tp-then-ddp")
    if rank == 0:
        shutil.copytree(tp_dir, ddp_dir)
        _back_to_step(ddp_dir, 2)
    dist.barrier()
    cfg = TrainConfig.from_dict({**cfgs["tp"], "train": {**cfgs["tp"]["train"], "out_dir": str(ddp_dir),
                                                         "tensor_parallel": 1}})  # fmt: skip
    trainer = Trainer(cfg, resume=True)
    try:
        expected = consolidate(ddp_dir / "checkpoints" / "step_00000002")
        got = trainer.raw_model.state_dict()
        results["tp->ddp restored"] = trainer.step == 2 and all(torch.equal(got[k], expected[k]) for k in expected)
        trainer.fit()
        flat = torch.cat([p.detach().flatten() for p in trainer.raw_model.parameters()])
        gathered = [torch.empty_like(flat) for _ in range(2)]
        dist.all_gather(gathered, flat)
        results["tp->ddp in sync"] = torch.equal(gathered[0], gathered[1])
    finally:
        trainer.close()


def _back_to_step(run: Path, step: int) -> None:
    """The run as if it had been stopped right after its step-``step`` checkpoint."""
    for path in list_checkpoints(run):
        if int(path.name[5:]) > step:
            shutil.rmtree(path)
    (run / "DONE").unlink(missing_ok=True)


def _worker(rank: int, world: int, port: int, cfgs: dict, out: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    results: dict = {}
    try:
        for kind, n in KINDS:
            for how in ("tp", "pp", "pp-1f1b"):
                results[f"{how} {kind}"] = _layout_steps(kind, n, how, rank)
        results["tp-tied shc"] = _layout_steps("shc", 4, "tp-tied", rank)
        _trainer_runs(cfgs, rank, results)
    finally:
        dist.destroy_process_group()
    if rank == 0:
        torch.save(results, out)


def _worker4(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    results: dict = {}
    try:
        for kind, n in KINDS:
            for how in ("tp", "tp-fsdp", "pp", "pp-fsdp"):
                results[f"{how} {kind}"] = _layout_steps(kind, n, how, rank, world)
            results[f"tp-pp {kind}"] = _layout_steps(kind, n, "tp-pp", rank, world)
    finally:
        dist.destroy_process_group()
    if rank == 0:
        torch.save(results, out)


@pytest.fixture(scope="module")
def launched4(tmp_path_factory):
    """TP = 2 x DP = 2 and PP = 2 x DP = 2: four processes, launched once."""
    root = tmp_path_factory.mktemp("scale4")
    top = str(Path(__file__).resolve().parents[_worker4.__module__.count(".")])
    with pytest.MonkeyPatch.context() as mp_ctx:
        mp_ctx.syspath_prepend(top)
        mp.spawn(_worker4, args=(4, _free_port(), str(root / "results.pt")), nprocs=4, join=True)
    return torch.load(root / "results.pt", weights_only=False)


@pytest.mark.parametrize("how", ["tp", "tp-fsdp", "pp", "pp-fsdp"])
@pytest.mark.parametrize(("kind", "n"), KINDS)
def test_a_layout_times_two_data_parallel_ranks_gives_the_one_process_run(launched4, how, kind, n):
    """Each dp rank its own micro-batches; one process takes all of them (the mean loss and gradient)."""
    losses, first, last = launched4[f"{how} {kind}"]
    ref_losses, ref_first, ref_last = _reference(kind, n, dp=2)
    assert losses == pytest.approx(ref_losses, rel=LOSS_REL)
    _close(first, ref_first, W1_ABS)
    _close(last, ref_last, W5_ABS)


@pytest.mark.parametrize(("kind", "n"), KINDS)
def test_tensor_parallel_pipeline_stages_give_the_one_process_run(launched4, kind, n):
    """TP = 2 inside each of PP = 2 stages: four processes, one data-parallel rank."""
    losses, first, last = launched4[f"tp-pp {kind}"]
    ref_losses, ref_first, ref_last = _reference(kind, n)
    assert losses == pytest.approx(ref_losses, rel=LOSS_REL)
    _close(first, ref_first, W1_ABS)
    _close(last, ref_last, W5_ABS)


@pytest.fixture(scope="module")
def launched(corpus, cache_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("scale")
    sets = [f"data.source={corpus}", f"data.cache_dir={cache_dir}", *MICRO, *LAYOUT_RUN]
    runs = {"tp": ["train.tensor_parallel=2"], "pp": ["train.pipeline_parallel=2"], "fsdp": ["train.fsdp=true"]}
    cfgs = {name: build_config("demo", overrides=[*sets, *extra], kind="shc", out=str(root / name)).to_dict()
            for name, extra in runs.items()}  # fmt: skip
    top = str(Path(__file__).resolve().parents[_worker.__module__.count(".")])
    with pytest.MonkeyPatch.context() as mp_ctx:
        mp_ctx.syspath_prepend(top)
        mp.spawn(_worker, args=(2, _free_port(), cfgs, str(root / "results.pt")), nprocs=2, join=True)
    return root, torch.load(root / "results.pt", weights_only=False), sets


def _close(a: dict, b: dict, tol: float) -> float:
    assert a.keys() == b.keys()
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst <= tol, f"weights differ by {worst} > {tol}"
    return worst


@pytest.mark.parametrize("how", ["tp", "pp", "pp-1f1b"])
@pytest.mark.parametrize(("kind", "n"), KINDS)
def test_a_layout_gives_the_one_process_losses_and_weights(launched, how, kind, n):
    losses, first, last = launched[1][f"{how} {kind}"]
    ref_losses, ref_first, ref_last = _reference(kind, n)
    assert losses == pytest.approx(ref_losses, rel=LOSS_REL)
    assert len(set(ref_losses)) == STEPS  # the steps moved the weights
    _close(first, ref_first, W1_ABS)
    _close(last, ref_last, W5_ABS)


def test_tensor_parallelism_keeps_a_tied_head_tied(launched):
    losses, first, last = launched[1]["tp-tied shc"]
    ref_losses, ref_first, ref_last = _reference("shc", 4, tied=True)
    assert losses == pytest.approx(ref_losses, rel=LOSS_REL)
    _close(first, ref_first, W1_ABS)
    _close(last, ref_last, W5_ABS)


@pytest.mark.parametrize("name", ["tp", "pp", "fsdp"])
def test_the_layouts_write_sharded_checkpoints(launched, name):
    run = launched[0] / name
    found = list_checkpoints(run)
    assert [p.name for p in found] == ["step_00000002", "step_00000004", "step_00000005"]
    assert all(is_sharded(p) and not (p / "model.safetensors").exists() for p in found)
    assert len(list((found[-1] / "sharded").glob("__*_0.distcp"))) == 2  # each rank wrote its shards
    assert "checkpoint_format: sharded" in (run / "config.yaml").read_text()  # auto, resolved and kept


def test_a_tensor_parallel_checkpoint_resumes_under_ddp_on_the_same_ranks(launched):
    results = launched[1]
    assert results["tp->ddp restored"], "the DDP model did not start from the TP checkpoint's weights"
    assert results["tp->ddp in sync"]
    assert (launched[0] / "tp-then-ddp" / "DONE").is_file()


@pytest.mark.parametrize("name", ["tp", "pp"])
def test_a_tp_or_pp_checkpoint_resumed_on_one_process_repeats_the_one_process_run(launched, name, tmp_path, capsys):
    root, _, sets = launched
    reference = train(build_config("demo", overrides=sets, kind="shc", out=str(tmp_path / "one")))
    run = tmp_path / "resumed"
    shutil.copytree(root / name, run)
    _back_to_step(run, 2)
    over = [*sets, "train.tensor_parallel=1", "train.pipeline_parallel=1"]
    train(build_config("demo", overrides=over, kind="shc", out=str(run)), resume=True)
    err = capsys.readouterr().err
    assert f"resume: from checkpoint {run / 'checkpoints' / 'step_00000002'} (step 2, sharded format)" in err
    assert "resume: the layout changed from world_size=2" in err
    ours = [r["loss"] for r in read_metrics(run) if r["loss"] is not None]
    theirs = [r["loss"] for r in read_metrics(reference) if r["loss"] is not None]
    assert len(ours) == len(theirs) == 5
    assert ours == pytest.approx(theirs, rel=LOSS_REL)


def test_an_fsdp_checkpoint_resumes_on_one_process_from_its_weights(launched, tmp_path):
    root, _, sets = launched
    run = tmp_path / "fsdp-on-one"
    shutil.copytree(root / "fsdp", run)
    _back_to_step(run, 4)
    trainer = Trainer(build_config("demo", overrides=sets, kind="shc", out=str(run)), resume=True)
    try:
        expected = consolidate(run / "checkpoints" / "step_00000004")
        got = trainer.raw_model.state_dict()
        assert trainer.step == 4 and trainer.layout.dp == 1
        assert all(torch.equal(got[k], expected[k]) for k in expected)
        moments = trainer.optimizer.state[trainer.raw_model.embed.weight]
        assert int(moments["step"]) == 4  # the optimizer state came along
        trainer.fit()
    finally:
        trainer.close()
    assert (run / "DONE").is_file()
