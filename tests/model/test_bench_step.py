"""The training-step benchmark times the trainer's own step (``hyperconn.train.step.train_step``)."""

import torch

from hyperconn.bench import model as bench_model
from hyperconn.bench.model import ModelBenchConfig, build_model, train_step_contender
from hyperconn.train.optim import build_optimizer
from hyperconn.train.step import train_step


def _cfg():
    return ModelBenchConfig(presets=("tiny",), kinds=("shc",), batch_size=2, seq_len=8, vocab_size=64,
                            precision="fp32", shrink=(32, 1))


def test_step_contender_calls_the_trainers_step(monkeypatch):
    calls = []

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return train_step(*args, **kwargs)

    monkeypatch.setattr(bench_model, "train_step", spy)
    train_step_contender(_cfg(), "tiny", "shc")()
    assert len(calls) == 1 and calls[0]["grad_clip"] == 1.0 and calls[0]["precision"] == "fp32"


def test_step_contender_updates_exactly_as_train_step(monkeypatch):
    cfg = _cfg()
    built = []

    def recording_build(*args):
        built.append(build_model(*args))
        return built[-1]

    monkeypatch.setattr(bench_model, "build_model", recording_build)
    step = train_step_contender(cfg, "tiny", "shc")
    step()
    # the same model, optimizer and batch, stepped directly with the trainer's step
    model = build_model(cfg, "tiny", "shc")
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = build_optimizer(model, 1e-4, (0.9, 0.95), 0.1)
    gen = torch.Generator().manual_seed(cfg.seed)
    x = torch.randint(cfg.vocab_size, (cfg.batch_size, cfg.seq_len), generator=gen)
    y = torch.randint(cfg.vocab_size, (cfg.batch_size, cfg.seq_len), generator=gen)
    train_step(model, optimizer, [(x, y)], precision="fp32", grad_clip=1.0)
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))
    for a, b in zip(built[0].parameters(), model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
