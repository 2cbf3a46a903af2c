"""Capture of the mixing matrices from a model through forward-pre-hooks."""

from __future__ import annotations

import pytest
import torch
from tests.support import TINY, perturb
from torch import nn

import hyperconn
from hyperconn.analysis.capture import capture_statistics
from hyperconn.diagnostics import MixingRecorder, hyper_connections
from hyperconn.diagnostics import metrics as dg

N, C = 4, 8


class ToyStack(nn.Module):
    """Embedding -> expand -> L blocks of (connection around a linear branch) -> reduce.

    The blocks are registered in REVERSE order and run in depth order, so registration order
    and call order differ."""

    def __init__(self, kind: str, depth: int = 3) -> None:
        super().__init__()
        n = 1 if kind == "residual" else N
        self.n = n
        self.embed = nn.Embedding(11, C)
        conns = [hyperconn.make_connection(kind, n, C, layer_index=i) for i in range(depth)]
        self.conns = nn.ModuleList(reversed(conns))
        self.branches = nn.ModuleList(nn.Linear(C, C) for _ in range(depth))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = hyperconn.expand_streams(self.embed(tokens), self.n)
        for i, branch in enumerate(self.branches):
            x = self.conns[len(self.branches) - 1 - i](x, branch)
        return hyperconn.reduce_streams(x)


def batches(k: int = 2):
    gen = torch.Generator().manual_seed(1)
    return [torch.randint(0, 11, (2, 5), generator=gen) for _ in range(k)]


@pytest.mark.parametrize("kind", ["residual", "hc", "mhc", "shc"])
def test_one_entry_per_connection_in_depth_order(kind):
    model = ToyStack(kind)
    perturb(model)
    result = capture_statistics(model, batches())
    conns = [c for _, c in hyper_connections(model)]
    applied = list(reversed(conns))
    assert [layer.layer_index for layer in result.layers] == [c.layer_index for c in applied] == [0, 1, 2]
    assert all(layer.tokens == 2 * 2 * 5 and layer.kind == kind for layer in result.layers)
    assert len(result.composite.forward_gain_mean) == 3
    curve = result.layers[0].sinkhorn_error_curve
    assert (curve is not None and len(curve) == 50) == (kind == "mhc")


def test_statistics_agree_with_direct_computation():
    model = ToyStack("hc")
    perturb(model)
    data = batches(2)
    result = capture_statistics(model, data)

    # recompute by hand: run the stack, reading mixing() of each connection on its own input
    per_layer = [[] for _ in range(3)]
    with torch.no_grad():
        for tokens in data:
            x = hyperconn.expand_streams(model.embed(tokens), N)
            for i, branch in enumerate(model.branches):
                conn = model.conns[2 - i]
                per_layer[i].append(conn.mixing(x).res.reshape(-1, N, N).double())
                x = conn(x, branch)
    res = [torch.cat(r) for r in per_layer]
    for layer, h in zip(result.layers, res, strict=True):
        assert layer.mean["identity_distance"] == pytest.approx(float(dg.identity_distance(h).mean()))
        assert layer.max["negative_mass"] == pytest.approx(float(dg.negative_mass(h).max()))
        assert torch.allclose(torch.tensor(layer.mean_res, dtype=torch.float64), h.mean(0))
    a = dg.composite(res)
    assert result.composite.forward_gain_max[-1] == pytest.approx(float(dg.forward_gain(a).max()))
    assert result.composite.backward_gain_mean[-1] == pytest.approx(float(dg.backward_gain(a).mean()))


@pytest.mark.slow
def test_hooks_removed_and_grad_untouched():
    model = ToyStack("shc")
    with MixingRecorder(model) as rec:
        model(batches(1)[0]).sum().backward()
        assert len(rec.pop()) == 3
    model(batches(1)[0])
    assert rec.calls == []
    assert model.training  # capture_statistics restores the mode
    capture_statistics(model, batches(1))
    assert model.training


def test_no_connection_is_an_error():
    with pytest.raises(ValueError, match="no HyperConnection"):
        capture_statistics(nn.Linear(2, 2), [torch.zeros(1, 2)])


@pytest.mark.slow
def test_language_model_capture_in_depth_order():
    from hyperconn.model import ConnectionConfig, LanguageModel, ModelConfig

    cfg = ModelConfig(**{**TINY, "n_layers": 3, "mlp_dim": 32}, connection=ConnectionConfig(kind="shc", num_streams=4))
    model = LanguageModel(cfg)
    tokens = torch.randint(0, 32, (2, 6))
    result = capture_statistics(model, [tokens])
    assert len(result.layers) == 2 * cfg.n_layers
    assert [layer.name for layer in result.layers] == [
        f"blocks.{i}.{part}_conn" for i in range(cfg.n_layers) for part in ("attn", "mlp")
    ]
    assert [layer.layer_index for layer in result.layers] == [0, 0, 1, 1, 2, 2]
    # the first and last connections are built without H_res (skip_inert): no H_res statistics
    assert [layer.mixes_streams for layer in result.layers] == [False, True, True, True, True, False]
    # sHC: sums 1 and spectral norm 1 at every layer and along the whole composite
    for layer in result.layers[1:-1]:
        assert layer.max["spectral_norm"] == pytest.approx(1.0, abs=1e-5)
        assert layer.max["row_sum_error"] < 1e-5
    assert max(result.composite.spectral_norm_max) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.slow
def test_skipped_connections_have_no_h_res_statistics_and_count_as_identity():
    from hyperconn.model import ConnectionConfig, LanguageModel, ModelConfig

    def build(skip: bool) -> LanguageModel:
        connection = ConnectionConfig(kind="shc", num_streams=4, skip_inert=skip)
        cfg = ModelConfig(**{**TINY, "mlp_dim": 32}, connection=connection)
        torch.manual_seed(0)
        return LanguageModel(cfg).double()

    full, bare = build(False), build(True)
    perturb(full)
    params = dict(full.named_parameters())
    with torch.no_grad():  # shared parameters: the skipped connections' pre/post columns
        for name, p in bare.named_parameters():
            p.copy_(params[name][tuple(slice(0, s) for s in p.shape)])
    data = [torch.randint(0, 32, (2, 6))]
    got, ref = capture_statistics(bare, data), capture_statistics(full, data)
    for i in (0, 3):
        layer = got.layers[i]
        assert not layer.mixes_streams and layer.mean_res is None and layer.subdominant_singular_values is None
        assert set(layer.mean) == set(layer.max) == set(ref.layers[i].mean)
        assert all(v is None for v in (*layer.mean.values(), *layer.max.values()))
        assert layer.tokens == 12
        assert layer.pre_mean == pytest.approx(ref.layers[i].pre_mean, abs=1e-12)
        assert layer.post_mean == pytest.approx(ref.layers[i].post_mean, abs=1e-12)
    for i in (1, 2):
        assert got.layers[i].mixes_streams and got.layers[i].mean == pytest.approx(ref.layers[i].mean, abs=1e-10)
    # the composite: the full model's matrices with I in place of the skipped ones
    with MixingRecorder(full) as rec, torch.no_grad():
        full(data[0])
        res = [c.res for c in rec.pop()]
    eye = torch.eye(4, dtype=torch.float64).expand_as(res[0])
    prefixes = torch.stack(dg.prefix_composites([eye, res[1], res[2], eye]), dim=1)
    assert got.composite.forward_gain_max == pytest.approx(dg.forward_gain(prefixes).amax(0).tolist(), abs=1e-10)
    assert got.composite.spectral_norm_mean == pytest.approx(dg.spectral_norm(prefixes).mean(0).tolist(), abs=1e-10)


@pytest.mark.parametrize("kind", ["hc", "mhc", "shc", "orthogonal", "identity"])
def test_each_connection_reports_the_invariants_its_kind_declares(kind):
    from hyperconn.analysis.commands import invariants_line
    from hyperconn.connections.invariants import closure

    model = ToyStack(kind)
    perturb(model, scale=0.5)
    result = capture_statistics(model, batches())
    declared = closure(hyperconn.connections.connection_class(kind).invariants)
    for layer in result.layers:
        if not layer.mixes_streams:  # identity: no H_res is computed, so none is measured
            assert layer.invariants is None and kind == "identity"
            continue
        assert tuple(layer.invariants) == declared
        assert all(0 <= v < 1e-5 for v in layer.invariants.values())
    line = invariants_line([{"invariants": la.invariants} for la in result.layers])
    assert ("VIOLATED" in line) is False
    measured = declared and kind != "identity"
    assert all(name in line for name in declared) if measured else line == "declared invariants: none"


def test_a_violated_invariant_is_flagged():
    from hyperconn.analysis.commands import invariants_line

    line = invariants_line([{"invariants": {"rows_sum_to_one": 1e-7}}, {"invariants": {"rows_sum_to_one": 0.2}}])
    assert line.endswith("rows_sum_to_one 2.0e-01 VIOLATED")
