"""The axis grammar: an axis value's text in run names and as YAML."""

from __future__ import annotations

import yaml

from hyperconn.analysis.axes import value_text, yaml_scalar


def test_value_text_and_yaml_scalar_round_trip():
    assert [value_text(v) for v in (2.0, 1e-3, 4, True, "a/b c")] == ["2.0", "0.001", "4", "true", "a_b_c"]
    for value in (1e-05, 2.5e-10, 3.0, 7, False, 1e20):
        assert yaml.safe_load(yaml_scalar(value)) == value and type(yaml.safe_load(yaml_scalar(value))) is type(value)
