"""Restate a committed ``summary.json`` under today's rules, from the data it holds (no runs needed).

A published study folder holds its ``summary.json`` but not its runs. When a rule of
:mod:`.summarise` or :mod:`.stats` changes, :func:`restate` brings such a summary to the current
rules from what the summary itself records, and :mod:`.render` re-renders ``report.md`` and the
plots from it (``scripts/restate_summaries.py`` does both for every folder under docs/results/):

- **structure** (:func:`restate_structure`): summaries written by commit ``a03ecd0`` counted a
  connection skipped as inert (no ``H_res``: the first and/or last connection, depending on the
  kind and the ends) as the exact identity, so their layer averages include it at the identity's
  values (0 for the distances, masses and errors, 1 for the spectral norm, n for the effective
  rank). Today a skipped connection has no ``H_res`` statistics and the layer average runs over
  the connections that learn one. The skipped layers are the ones whose ``per_layer``
  ``identity_distance`` is exactly 0.0 (a learned ``H_res`` never is); with ``L`` layers of which
  ``s`` were skipped, every layer average becomes ``(L mean - s identity) / (L - s)`` (the same
  on each seed's average and on their mean over seeds, as both are linear), and the skipped
  entries of ``per_layer`` become NaN. The worst-layer values are kept: the identity's value
  cannot be a worst layer's (checked: its spectral norm 1 is below every stored worst one).
  The composite is unchanged (it applied ``I`` for a skipped connection under both rules);
- **Δ vs residual** (:func:`.summarise.versus_residual`): each group against the residual group
  of the same axis values;
- **paired differences** (:func:`.summarise.paired_differences`): recomputed from
  ``val_loss_by_seed`` in the stored order, over the stored Holm family: ``mdd_80`` from the
  noncentral t, and today's verdict words;
- **command**: a summary whose Holm family was pre-specified (``--pairs``) but whose recorded
  command line, written before the command carried it, leaves it out gets ``--pairs`` appended
  (as :func:`.compare.compare_command` writes it today), so the command rebuilds the study;
- **names**: ``method`` / ``streams`` (the names before the rename) become ``kind`` /
  ``num_streams``, and a Holm family written before ``--pairs`` existed is named ``every pair``,
  so today's renderer reads the summary.

What was restated is listed under ``restated`` in the summary (and named in its report); a
summary written under today's rules comes back unchanged.
"""

from __future__ import annotations

import copy
import json
import math

import torch

from .summarise import paired_differences, versus_residual

STRUCTURE_RULE = (
    "layer averages of H_res diagnostics over the connections that learn an H_res: connections skipped as "
    "inert (per_layer identity_distance exactly 0.0, recorded then as the identity) left out, "
    "(L mean - s identity value) / (L - s); worst-layer and composite values unchanged"
)
RESIDUAL_RULE = "Δ vs residual against the residual group of the same axis values"
PAIRS_RULE = "paired differences recomputed from val_loss_by_seed: mdd_80 from the noncentral t; verdict words"
NAMES_RULE = "method / streams renamed kind / num_streams"
COMMAND_RULE = "the recorded command carries the pre-specified family (--pairs)"


def identity_values(num_streams: int) -> dict[str, float]:
    """Every layer diagnostic of the ``n x n`` identity (what a skipped connection was counted as),
    computed by the diagnostics themselves."""
    from .capture import SCALAR_METRICS

    eye = torch.eye(num_streams, dtype=torch.float64).unsqueeze(0)
    return {key: float(fn(eye).mean()) for key, fn in SCALAR_METRICS.items()}


def skipped_layers(entry: dict) -> list[int]:
    """The layers whose ``per_layer`` identity distance is exactly 0.0 (a connection skipped as
    inert, counted as the identity); none for residual (it has no H_res at all) and none for a
    group written under today's rule (its skipped layers are NaN)."""
    kind = entry.get("kind", entry.get("method"))
    per_layer = entry.get("per_layer")
    if kind == "residual" or not per_layer:
        return []
    values = per_layer["identity_distance"]
    if any(math.isnan(x) for x in values):  # written under today's rule: skipped layers are NaN already
        return []
    return [i for i, x in enumerate(values) if x == 0.0]


def restate_structure(summary: dict) -> dict:
    """A copy of ``summary`` whose layer averages leave out the connections skipped as inert
    (module docstring); groups without such layers are unchanged. Raises ValueError where the
    stored layer average does not equal the mean of the stored per-layer values (the data would
    not support the restatement) or where the identity could have been a worst layer."""
    out = copy.deepcopy(summary)
    for group, entry in out["groups"].items():
        skipped = skipped_layers(entry)
        if not skipped:
            continue
        per_layer, diag = entry["per_layer"], entry["diagnostics"]
        total = len(per_layer["identity_distance"])
        if len(skipped) == total:
            raise ValueError(f"{group}: every layer reads as skipped")
        for key in ("identity_distance", "negative_mass"):
            stored = sum(per_layer[key]) / total
            if not math.isclose(stored, diag["mean"][key], rel_tol=1e-9, abs_tol=1e-12):
                raise ValueError(f"{group}: the layer average of {key} ({diag['mean'][key]}) is not the mean of "
                                 f"its per-layer values ({stored})")  # fmt: skip
        n = entry.get("num_streams", entry.get("streams"))
        ident = identity_values(int(n))
        if ident["spectral_norm"] >= diag["worst"]["spectral_norm"]:
            raise ValueError(f"{group}: the identity's spectral norm could be the worst layer's")
        keep = total - len(skipped)
        diag["mean"] = {key: (total * value - len(skipped) * ident[key]) / keep for key, value in diag["mean"].items()}
        for key in ("identity_distance", "negative_mass"):
            per_layer[key] = [math.nan if i in skipped else v for i, v in enumerate(per_layer[key])]
        entry["skipped_layers"] = skipped
    return out


def _rename(mapping: dict, old: str, new: str) -> dict:
    """``mapping`` with key ``old`` renamed ``new`` in place of order; where both are present, ``new``
    is kept as it is and ``old`` dropped."""
    if new in mapping:
        return {k: v for k, v in mapping.items() if k != old}
    return {(new if k == old else k): v for k, v in mapping.items()}


def restate_names(summary: dict) -> dict:
    """``method`` / ``streams`` (groups), ``methods`` / ``streams`` (study, axes) renamed to
    today's ``kind`` / ``num_streams`` / ``kinds``; key order kept."""
    out = copy.deepcopy(summary)
    study = _rename(_rename(out["study"], "methods", "kinds"), "streams", "num_streams")
    study["axes"] = [_rename(a, "methods", "kinds") for a in study.get("axes", [])]
    out["study"] = study
    out["axes"] = [_rename(a, "methods", "kinds") for a in out.get("axes", [])]
    out["groups"] = {g: _rename(_rename(e, "method", "kind"), "streams", "num_streams")
                     for g, e in out["groups"].items()}  # fmt: skip
    out["multiple_comparisons"].setdefault("family", "every pair")  # written before --pairs existed
    return out


def restate(summary: dict) -> dict:
    """``summary`` under today's rules (module docstring), with ``restated`` listing what changed."""
    notes = list(summary.get("restated") or [])
    renamed = any("method" in e for e in summary["groups"].values())
    out = restate_names(summary)
    if renamed:
        notes.append(NAMES_RULE)
    if any(skipped_layers(e) for e in out["groups"].values()):
        out = restate_structure(out)
        notes.append(STRUCTURE_RULE)
    family_names = out["multiple_comparisons"].get("family")
    if isinstance(family_names, list) and family_names and " --pairs " not in out["command"]:
        out["command"] += f" --pairs {','.join(family_names)}"
        notes.append(COMMAND_RULE)
    def residual_fields() -> str:
        keys = ("residual_group", "val_loss_diff_to_residual", "overhead_pct_vs_residual")
        return json.dumps({g: [e.get(k) for k in keys] for g, e in out["groups"].items()})

    before = residual_fields()
    versus_residual(out["groups"])
    if residual_fields() != before:
        notes.append(RESIDUAL_RULE)
    stored = out["paired_differences"]
    family = [p.get("in_family", True) for p in stored]
    out["paired_differences"] = paired_differences(out["groups"], [(p["a"], p["b"]) for p in stored], family)
    if json.dumps(out["paired_differences"]) != json.dumps(stored):
        notes.append(PAIRS_RULE)
    if notes:  # a summary written under today's rules is returned as it was
        out["restated"] = list(dict.fromkeys(notes))
    return out
