"""The benchmarks run (smoke mode, tiny sizes) and report what they claim; no timing assertions."""

import json

import pytest
import torch

import hyperconn
from hyperconn.bench.layer import LayerBenchConfig, add_ratios, supports
from hyperconn.bench.report import format_table, write_json
from hyperconn.bench.timing import interleaved_medians, saved_activation_bytes
from hyperconn.cli import main


@pytest.mark.slow
def test_layer_smoke_writes_every_kind_and_reference(tmp_path, capsys):
    out = tmp_path / "layer.json"
    assert main(["bench", "layer", "--smoke", "--json", str(out)]) == 0
    assert "speedup_vs_naive" in capsys.readouterr().out
    payload = json.loads(out.read_text())
    assert payload["bench"] == "layer" and payload["machine"]["torch_threads"] == 1
    rows = payload["rows"]
    for n in (2, 4):
        names = {r["contender"] for r in rows if r["n"] == n and r["dtype"] == "fp32"}
        kinds = {k for k in hyperconn.available_connections() if supports(k, n)}
        assert kinds | {f"naive:{k}" for k in kinds} | {"floor", "residual"} <= names
        assert {"hyper-connections:hc", "hyper-connections:mhc"} <= names
    for r in rows:
        assert r["median_ms"] > 0 and r["min_ms"] <= r["median_ms"]
        assert r["x_floor"] > 0
        if r["contender"] in hyperconn.available_connections() and r["contender"] != "residual":
            assert r["speedup_vs_naive"] > 0 and r["speedup_vs_pkg_mhc"] > 0


@pytest.mark.parametrize("command", [pytest.param("step", marks=pytest.mark.slow), "decode"])
def test_model_benches_smoke(command, tmp_path):
    out = tmp_path / f"{command}.json"
    assert main(["bench", command, "--smoke", "--kinds", "residual,shc,hc", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["contender"] for r in rows] == ["residual", "shc n=4", "hc n=4"]
    assert rows[0]["x_residual"] == 1.0
    assert all(r["median_ms"] > 0 for r in rows)
    if command == "decode":
        assert all(r["tokens_per_s"] > 0 for r in rows)
        # a hyper-connection model dispatches strictly more ops per token than the residual one
        assert all(r["aten_ops_per_token"] > rows[0]["aten_ops_per_token"] > 0 for r in rows[1:])


def test_bad_arguments_are_reported(capsys):
    assert main(["bench", "layer", "--smoke", "--threads", "0"]) == 2
    assert "--threads" in capsys.readouterr().err
    assert main(["bench", "layer", "--smoke", "--kinds", "nope"]) == 2
    assert "nope" in capsys.readouterr().err


def test_layer_config_validation():
    with pytest.raises(ValueError, match="dtype"):
        LayerBenchConfig(dtypes=("fp8",)).validate()
    with pytest.raises(ValueError, match="mode"):
        LayerBenchConfig(modes=("jit",)).validate()


def test_supports_follows_the_kinds_own_checks():
    assert supports("kromhc", 4) and not supports("kromhc", 3)
    assert supports("mhc_lite", 4) and not supports("mhc_lite", 8)
    assert not supports("residual", 1)


def test_interleaved_medians_runs_every_contender_equally():
    calls = {"a": 0, "b": 0}

    def bump(name):
        def run():
            calls[name] += 1

        return run

    out = interleaved_medians({"a": bump("a"), "b": bump("b")}, repeats=3, warmup=2)
    assert calls == {"a": 5, "b": 5}
    assert set(out) == {"a", "b"} and all(v["median_ms"] >= 0 for v in out.values())
    with pytest.raises(ValueError, match="repeats"):
        interleaved_medians({"a": bump("a")}, repeats=0)


def test_saved_activation_bytes_counts_each_storage_once():
    x = torch.randn(100, requires_grad=True)
    y = torch.randn(100, requires_grad=True)
    assert saved_activation_bytes(lambda: x * y) == 2 * 100 * 4
    assert saved_activation_bytes(lambda: x * x) == 100 * 4
    assert saved_activation_bytes(lambda: x + y) == 0


def test_ratios_are_relative_to_the_same_configuration():
    rows = [
        dict(n=4, dim=8, dtype="fp32", mode="eager", contender="shc", median_ms=2.0),
        dict(n=4, dim=8, dtype="fp32", mode="eager", contender="naive:shc", median_ms=8.0),
        dict(n=4, dim=8, dtype="fp32", mode="eager", contender="floor", median_ms=1.0),
        dict(n=4, dim=8, dtype="fp32", mode="eager", contender="hyper-connections:mhc", median_ms=10.0),
        dict(n=2, dim=8, dtype="fp32", mode="eager", contender="floor", median_ms=100.0),
    ]
    add_ratios(rows)
    assert rows[0]["x_floor"] == 2.0
    assert rows[0]["speedup_vs_naive"] == 4.0
    assert rows[0]["speedup_vs_pkg_mhc"] == 5.0
    assert "speedup_vs_pkg_mhc" not in rows[2]


def test_table_and_json(tmp_path):
    table = format_table([{"a": 1.23456, "b": "x"}, {"a": 1234.5}], ["a", "b"])
    lines = table.splitlines()
    assert lines[0].split() == ["a", "b"] and lines[2].split() == ["1.23", "x"] and lines[3].split() == ["1234", "-"]
    path = write_json(tmp_path / "sub" / "r.json", {"k": [1, 2]})
    assert json.loads(path.read_text()) == {"k": [1, 2]}
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]


def test_call_smoke_counts_ops_for_every_kind(tmp_path):
    out = tmp_path / "call.json"
    assert main(["bench", "call", "--smoke", "--json", str(out)]) == 0
    rows = {r["contender"]: r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == set(hyperconn.available_connections())
    assert rows["residual"]["n"] == 1 and rows["shc"]["n"] == 4
    for r in rows.values():
        assert r["us_per_call"] > 0 and r["aten_ops"] >= 1
    # a hyper-connection does strictly more than the plain residual add
    assert all(r["aten_ops"] > rows["residual"]["aten_ops"] for name, r in rows.items() if name != "residual")


def test_count_aten_ops_counts_exactly_what_runs():
    from hyperconn.bench.call import count_aten_ops

    a = torch.ones(3)
    ops = count_aten_ops(lambda: (a * 2).sum() + a[0])
    assert ops == {"mul": 1, "sum": 1, "select": 1, "add": 1}


@pytest.mark.slow
def test_layer_grid_plot_from_a_smoke_run(tmp_path):
    grid = tmp_path / "grid.json"
    assert main(["bench", "layer", "--smoke", "--no-naive", "--no-package", "--kinds", "shc,hc",
                 "--json", str(grid)]) == 0
    rows = json.loads(grid.read_text())["rows"]
    assert {r["contender"] for r in rows} == {"shc", "hc", "floor"}  # no naive, no package rows
    png = tmp_path / "grid.png"
    assert main(["bench", "plot", str(grid), "--out", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_grid_series_groups_and_refuses_a_missing_mode():
    from hyperconn.bench.plot import grid_series

    rows = [dict(bench="layer", mode="eager", dtype="fp32", dim=16, n=n, contender=k, median_ms=float(n))
            for n in (4, 2) for k in ("shc", "floor")]
    assert grid_series(rows, "eager", "fp32") == {16: {"shc": [(2, 2.0), (4, 4.0)], "floor": [(2, 2.0), (4, 4.0)]}}
    with pytest.raises(ValueError, match="mode='compiled'"):
        grid_series(rows, "compiled", "fp32")


@pytest.mark.slow
def test_compiled_groups_time_the_eager_references_in_the_same_rounds():
    from hyperconn.bench.layer import _inputs, build_contenders, package_available

    cfg = LayerBenchConfig(kinds=("shc", "hc"), floor=False)
    x, grad = _inputs(8, 2, 16, torch.float32, 0)
    built = build_contenders(cfg, 2, x, grad, compiled=True, use_package=package_available())  # lazy: no compile yet
    assert {"shc", "hc", "naive:shc", "naive:hc"} <= set(built)
    assert package_available() == ("hyper-connections:mhc" in built)


@pytest.mark.slow
def test_compiled_decode_generates_what_eager_does():
    """``bench decode --compile`` compiles the whole forward with dynamic shapes: the prompt's
    prefill and every one-token step at a growing cache position run compiled, and greedy
    decoding gives the eager model's tokens."""
    from hyperconn.bench.model import ModelBenchConfig, build_model

    cfg = ModelBenchConfig(shrink=(32, 1), vocab_size=64, precision="fp32")
    eager = build_model(cfg, "tiny", "shc").eval()
    compiled = build_model(cfg, "tiny", "shc").eval()
    compiled.compile(dynamic=True)
    prompt = torch.randint(cfg.vocab_size, (1, 5), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = eager.generate(prompt, 6, temperature=0.0)
        got = compiled.generate(prompt, 6, temperature=0.0)
    assert torch.equal(got, want)
