"""train_step against a naive reference: micro-batches accumulate the full batch's gradient,
the norm is the one before clipping, the update is the optimizer's on the clipped gradient."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hyperconn.train.step import backward_step, train_step


class TinyLM(nn.Module):
    def __init__(self, vocab: int = 11, dim: int = 8) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.out = nn.Linear(dim, vocab)

    def forward(self, idx):
        return self.out(torch.tanh(self.emb(idx)))


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(11, (4, 6), generator=g), torch.randint(11, (4, 6), generator=g)


@pytest.mark.parametrize("clip", [None, 1e-3, 100.0])
def test_two_micro_batches_step_like_the_whole_batch(clip):
    model = TinyLM()
    ref = copy.deepcopy(model)
    x, y = _batch()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    loss, norm = train_step(model, opt, [(x[:2], y[:2]), (x[2:], y[2:])], grad_clip=clip)

    ref_loss = F.cross_entropy(ref(x).reshape(-1, 11), y.reshape(-1))
    ref_loss.backward()
    grads = [p.grad for p in ref.parameters()]
    ref_norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    scale = 1.0 if clip is None else min(1.0, clip / (float(ref_norm) + 1e-6))
    torch.testing.assert_close(loss, ref_loss.detach())
    if clip is None:
        assert norm is None
    else:
        torch.testing.assert_close(norm, ref_norm)
    for p, q, g in zip(model.parameters(), ref.parameters(), grads, strict=True):
        torch.testing.assert_close(p.detach(), q.detach() - 0.5 * scale * g)
        assert p.grad is None  # dropped after the update


def test_backward_step_leaves_the_weights_and_refuses_no_batch():
    model = TinyLM()
    before = [p.detach().clone() for p in model.parameters()]
    loss, norm = backward_step(model, [_batch()], grad_clip=1.0)
    assert float(loss) > 0 and float(norm) > 0
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before, strict=True))
    assert all(p.grad is not None for p in model.parameters())
    with pytest.raises(ValueError, match="at least one micro-batch"):
        backward_step(model, [])
