"""hyperconn bench memory (smoke size): residual, n-widened and frac-connection contenders, the
stream bytes each keeps between sublayers."""

import json

import pytest

from hyperconn.cli import main


@pytest.mark.slow
def test_memory_smoke_reports_the_stream_of_each_contender(tmp_path):
    out = tmp_path / "memory.json"
    assert main(["bench", "memory", "--smoke", "--kinds", "hc,shc", "--json", str(out)]) == 0
    rows = {r["contender"]: r for r in json.loads(out.read_text())["rows"]}
    assert list(rows) == ["residual", "hc n=4", "hc num_fracs=4", "shc n=4", "shc num_fracs=4"]
    base = rows["residual"]["stream_mib"]
    for kind in ("hc", "shc"):
        assert rows[f"{kind} num_fracs=4"]["stream_mib"] == base  # no widening
        assert rows[f"{kind} n=4"]["stream_mib"] == 4 * base
        assert rows[f"{kind} num_fracs=4"]["saved_mib"] < rows[f"{kind} n=4"]["saved_mib"]
    assert rows["residual"]["x_residual"] == 1
