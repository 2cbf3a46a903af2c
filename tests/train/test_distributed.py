"""Two CPU processes (gloo): DDP and FSDP2 keep the ranks' parameters identical."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from shc.train import TrainConfig, Trainer, read_metrics


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, cfg_dict: dict, out: str, resume_steps: int = 0) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        trainer = Trainer(TrainConfig.from_dict(cfg_dict))
        trainer.fit()
        if resume_steps:  # continue the finished run from its checkpoint
            cfg_dict["train"]["steps"] = resume_steps
            trainer = Trainer(TrainConfig.from_dict(cfg_dict), resume=True)
            trainer.fit()
        params = []
        for p in trainer.raw_model.parameters():
            p = p.detach()
            params.append((p.full_tensor() if hasattr(p, "full_tensor") else p).flatten())
        torch.save(torch.cat(params), os.path.join(out, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("fsdp", [False, True], ids=["ddp", "fsdp2"])
def test_two_ranks_stay_in_sync(make_cfg, tmp_path, monkeypatch, fsdp):
    # spawned children import this module by the name pytest gave it: put its root on their path
    root = Path(__file__).resolve().parents[_worker.__module__.count(".")]
    monkeypatch.syspath_prepend(str(root))  # spawn hands the parent's sys.path to the children
    cfg = make_cfg(
        "train.steps=3",
        "train.eval_interval=3",
        "train.checkpoint_interval=3",
        f"train.fsdp={str(fsdp).lower()}",
        "train.grad_accum=2",
        name="ddp",
    )
    # 3 steps, then resumed from the step-3 checkpoint up to step 4
    mp.spawn(_worker, args=(2, _free_port(), cfg.to_dict(), str(tmp_path), 4), nprocs=2, join=True)
    a, b = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert torch.equal(a, b)
    rows = [r for r in read_metrics(cfg.run_dir) if r["loss"] is not None]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert rows[-1]["tokens"] == 4 * 2 * 2 * 4 * 16  # steps x ranks x accum x batch x seq
    assert (cfg.run_dir / "DONE").is_file()
