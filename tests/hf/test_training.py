"""A converted model trains: labels loss, gradients into the connections, loss going down, the
streams moving apart, gradient checkpointing."""

from __future__ import annotations

import pytest
import torch

import hyperconn.hf

from .helpers import VOCAB, perturb_connections, slow_unless, tiny_model, token_batch


def toy_sequence(length: int = 16) -> torch.Tensor:
    """A repeating pattern a 3-layer model learns within a few steps."""
    return torch.tensor([[3, 14, 15, 9, 26, 5, 35, 8] * (length // 8)])


def adamw_steps(model, ids, steps: int, lr: float = 1e-2) -> list[float]:
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = model(ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("family", ["llama", "qwen3"])
def test_labels_loss_is_the_shifted_cross_entropy(family):
    model = hyperconn.hf.convert(tiny_model(family), "shc", 4)
    perturb_connections(model)
    ids = token_batch()
    out = model(ids, labels=ids)
    expected = torch.nn.functional.cross_entropy(out.logits[:, :-1].reshape(-1, VOCAB), ids[:, 1:].reshape(-1))
    torch.testing.assert_close(out.loss, expected)


@pytest.mark.parametrize(
    ("kind", "streams"),
    [
        slow_unless(kind == "shc", kind, n)
        for kind, n in [("hc", 4), ("mhc", 4), ("mhc_lite", 3), ("kromhc", 4), ("shc", 4)]
    ],
)
def test_gradients_reach_every_connection_parameter_and_the_loss_falls(kind, streams):
    model = hyperconn.hf.convert(tiny_model("llama"), kind, streams)
    ids = toy_sequence()
    # at the preserving init H_pre and H_post receive gradients in every connection
    model.train()
    model(ids, labels=ids).loss.backward()
    for conn in hyperconn.hf.hyper_connections(model):
        pre_post = conn.bias.grad[: 2 * streams] if kind != "hc" else conn.alpha_static.grad[:, 0]
        assert pre_post.abs().max() > 0, f"{kind} layer {conn.layer_index}: no gradient to H_pre/H_post"
    model.zero_grad()
    losses = adamw_steps(model, ids, steps=8)
    assert losses[-1] < 0.7 * losses[0], losses
    # once the streams differ, every connection parameter (H_res's included) gets a gradient
    model(ids, labels=ids).loss.backward()
    for conn in hyperconn.hf.hyper_connections(model):
        for name, param in conn.named_parameters():
            assert param.grad is not None and param.grad.abs().max() > 0, f"{kind}: {name} has no gradient"


def stream_spread(model, ids) -> float:
    """max |x_i - mean_j x_j| / max |x| over the streams leaving the second-to-last layer."""
    captured = {}
    conn = model.model.layers[-2].mlp_conn
    handle = conn.register_forward_hook(lambda module, args, out: captured.update(streams=out.detach()))
    with torch.no_grad():
        model.eval()
        model(ids)
    handle.remove()
    x = captured["streams"]
    return ((x - x.mean(-2, keepdim=True)).abs().max() / x.abs().max()).item()


@pytest.mark.parametrize("uniform_pre", [False, True])
def test_the_streams_move_apart_under_training_unless_h_pre_is_uniform(uniform_pre):
    """The preserving init starts from equal streams; its uneven H_pre breaks the symmetry. The
    control (H_pre = 1/n everywhere, still function-preserving) is a fixed point: the streams
    stay equal however long it trains."""
    model = hyperconn.hf.convert(tiny_model("llama"), "shc", 4)
    if uniform_pre:
        with torch.no_grad():
            for conn in hyperconn.hf.hyper_connections(model):
                conn.bias[:4] = torch.logit(torch.tensor(0.25))
    ids = toy_sequence()
    assert stream_spread(model, ids) < 1e-6
    adamw_steps(model, ids, steps=4)
    spread = stream_spread(model, ids)
    if uniform_pre:
        assert spread < 1e-4  # rounding noise only (it grows slowly: ~1e-6 after 4 steps)
    else:
        assert spread > 1e-3


def enable_checkpointing(model) -> None:
    """``activation_checkpointing_enable`` (transformers >= 5.x names it so), else the older name."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


@pytest.mark.parametrize("family", ["llama", pytest.param("qwen2", marks=pytest.mark.slow)])
def test_gradient_checkpointing_gives_the_same_gradients(family):
    ids = token_batch()
    grads = []
    for checkpointing in (False, True):
        model = hyperconn.hf.convert(tiny_model(family), "shc", 4)
        perturb_connections(model)
        if checkpointing:
            enable_checkpointing(model)
            assert all(layer.gradient_checkpointing for layer in model.model.layers)
        model.train()
        model(ids, labels=ids).loss.backward()
        grads.append({name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], atol=1e-6, rtol=1e-5, msg=name)


def test_checkpointing_enabled_before_the_conversion_stays_on():
    model = tiny_model("llama")
    enable_checkpointing(model)
    hyperconn.hf.convert(model, "shc", 4)
    calls = {"n": 0}
    for layer in model.model.layers:
        assert layer.gradient_checkpointing

        def counting(*args, _inner=layer._gradient_checkpointing_func, **kwargs):
            calls["n"] += 1
            return _inner(*args, **kwargs)

        layer._gradient_checkpointing_func = counting
    model.train()
    ids = token_batch()
    model(ids, labels=ids).loss.backward()
    assert calls["n"] == len(model.model.layers)


def test_recompute_option_reaches_the_connections_and_keeps_the_gradients():
    ids = token_batch()
    grads = []
    for recompute in (False, True):
        model = hyperconn.hf.convert(tiny_model("qwen3"), "shc", 4, recompute=recompute)
        assert all(conn.recompute == recompute for conn in hyperconn.hf.hyper_connections(model))
        perturb_connections(model)
        model.train()
        model(ids, labels=ids).loss.backward()
        grads.append({name: p.grad.clone() for name, p in model.named_parameters()})
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], atol=1e-6, rtol=1e-5, msg=name)


class _TokenDataset(torch.utils.data.Dataset):
    def __init__(self, ids: torch.Tensor) -> None:
        self.ids = ids

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["mhc", "shc"])
def test_trainer_with_fused_adamw_evaluates_and_generates_the_current_weights(kind, tmp_path):
    """``transformers.Trainer`` with its default ``adamw_torch_fused`` (which leaves ``_version``
    alone): ``evaluate()`` equals the loss recomputed with autograd on, and the logits (no-grad and
    inference mode) equal those of a fresh model loaded from the same weights."""
    transformers = pytest.importorskip("transformers")
    model = hyperconn.hf.convert(tiny_model("llama"), kind=kind, num_streams=4)
    data = _TokenDataset(torch.cat([token_batch(4, 12, seed=s) for s in range(2)]))
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path), optim="adamw_torch_fused", learning_rate=5e-2, max_steps=6,
        per_device_train_batch_size=4, per_device_eval_batch_size=8, report_to=[], save_strategy="no",
        logging_strategy="no", use_cpu=True, dataloader_num_workers=0,
    )
    trainer = transformers.Trainer(model=model, args=args, train_dataset=data, eval_dataset=data)
    before = trainer.evaluate()["eval_loss"]  # a no-grad pass before any step: what a cache would keep
    trainer.train()
    optimizer = getattr(trainer.optimizer, "optimizer", trainer.optimizer)  # accelerate wraps it
    assert optimizer.defaults.get("fused") is True
    evaluated = trainer.evaluate()["eval_loss"]
    model.eval()
    ids = data.ids
    with torch.enable_grad():
        truth = model(ids, labels=ids).loss.item()
    assert evaluated != pytest.approx(before, abs=1e-4)
    assert evaluated == pytest.approx(truth, abs=1e-5)

    model.save_pretrained(tmp_path / "saved")
    reloaded = hyperconn.hf.load(tmp_path / "saved").float().eval()
    with torch.enable_grad():
        expected = reloaded(ids).logits.detach()
    for context in (torch.no_grad, torch.inference_mode):
        with context():
            torch.testing.assert_close(model(ids).logits, expected, rtol=1e-5, atol=1e-5)
