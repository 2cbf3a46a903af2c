"""The report's sections on what the numbers rest on: which runs count (unfinished ones are named
and left out), which code trained them, what the final evaluation covered, the paired tests with
their multiplicity correction and power, and training stability. Each returns markdown lines (or
one line) from the summary of :mod:`.summarise`."""

from __future__ import annotations

from .report import fmt, md_table


def signed(x: float | None, digits: int = 4) -> str:
    return "-" if x is None else f"{x:+.{digits}f}"


def unfinished_block(summary: dict) -> list[str]:
    unfinished = summary.get("unfinished") or []
    if not unfinished:
        return []
    runs = ", ".join(f"`{u['name']}` (step {u['step']} of {u['steps']})" for u in unfinished)
    return [f"> **UNFINISHED: {len(unfinished)} run(s) of this study have not reached their final step and are "
            f"left out of every table, pair and curve below:** {runs}.", ""]  # fmt: skip


def provenance_line(prov: dict | None) -> str:
    """Which commit(s) trained the runs in the report."""
    if prov is None:
        return "commit not recorded"
    commits = prov["commits"]
    text = ("commit " if len(commits) == 1 else "MIXED commits ") + ", ".join(f"`{c}`" for c in commits)
    if not commits:
        text = "no run records its commit"
    if prov["dirty"]:
        text += " (with uncommitted changes in at least one run segment)"
    if prov["unknown"] and commits:
        text += f"; commit unknown for {', '.join(prov['unknown'])}"
    dirty_unknown = [n for n in prov.get("dirty_unknown", []) if n not in prov["unknown"]]
    if dirty_unknown:
        text += f"; whether the checkout had uncommitted changes is unknown for {', '.join(dirty_unknown)}"
    if prov.get("resumed_on"):
        text += "; resumed: " + ", ".join(f"{n} on {', '.join(c)}" for n, c in prov["resumed_on"].items())
    if "compile" in prov:
        modes = prov["compile"]
        unrecorded = [n for n, seq in prov.get("compile_by_run", {}).items() if None in seq]
        text += "; compile: " + (", ".join(modes) if modes else "not recorded")
        if modes and unrecorded:
            text += f" (not recorded for {', '.join(unrecorded)})"
    return text


def final_eval_line(summary: dict) -> str:
    """What the final numbers are: the full-split evaluation of ``DONE``, or the last logged one."""
    counts = {v for e in summary["groups"].values() for v in e.get("val_tokens", {}).values()}
    split = (summary["data"].get("split") or {}).get("val_tokens")
    of_split = "" if split is None else f"; the held-out split has {split:,} tokens"
    known = sorted(c for c in counts if c is not None)
    parts = []
    if known:
        tokens = ", ".join(f"{c:,}" for c in known)
        parts.append(f"each run's final evaluation over the whole held-out split ({tokens} tokens{of_split})")
    if None in counts:
        parts.append("for runs that did not record it, the last logged evaluation (`train.eval_batches` batches)")
    return "Final numbers: " + "; ".join(parts) + "."


def paired_section(summary: dict, names: dict[str, str]) -> list[str]:
    pct = round(100 * summary["confidence"])
    alpha, power = summary.get("alpha", 0.05), summary.get("power", 0.8)
    tested, family = summary["multiple_comparisons"]["pairs"], summary["multiple_comparisons"]["family"]
    over = f"{tested} pair(s) with a p-value" if family == "every pair" else (
        f"{tested} pre-specified pair(s) with a p-value (the family given by `--pairs`, listed first; "
        "every other pair shows its uncorrected p and no verdict)"
    )
    lines = [
        "## Paired differences of the final validation loss (by seed)",
        "",
        f"For groups A, B and each seed s both ran: d_s = loss_A(s) − loss_B(s) (nats/token). Mean and sample sd "
        f"of d over the k common seeds; {pct}% confidence interval mean ± t_(k−1) sd/√k with the Student-t "
        f"quantile at {(1 + summary['confidence']) / 2:.3f} and k−1 degrees of freedom (needs k ≥ 2); p: two-sided "
        "p-value of the paired t statistic T = mean/(sd/√k). Multiplicity correction: Holm step-down over the "
        f"{over} (p_holm); resolved = p_holm < {alpha:g} (a negative difference: A ends "
        f"lower). Otherwise: not detected, with the largest difference the {pct}% interval still allows. "
        f"mdd_80: the difference the paired t-test at per-comparison alpha = {alpha:g} would detect with "
        f"{power:.0%} power, from the noncentral t with k−1 degrees of freedom (delta sd/√k where the power "
        f"of the two-sided test reaches {power:g}) with the observed sd (before the Holm correction, which only "
        "raises it).",
        "",
    ]
    rows, resolved = [], []
    for p in summary["paired_differences"]:
        ci = "-" if p["ci_low"] is None else f"[{p['ci_low']:+.4f}, {p['ci_high']:+.4f}]"
        rows.append([names[p["a"]], names[p["b"]], p["n"], signed(p["mean"]), fmt(p["sd"]), ci,
                     _p(p["p"]), _p(p["p_holm"]), fmt(p["mdd_80"]), p["verdict"]])  # fmt: skip
        if p["resolved"]:
            resolved.append(f"{names[p['a']]} − {names[p['b']]} = {p['mean']:+.4f}")
    header = ["A", "B", "k", "mean d", "sd d", f"{pct}% CI", "p", "p_holm", "mdd_80", "verdict"]
    lines += [md_table(header, rows), ""]
    if not summary["paired_differences"]:
        lines += ["(one group only: no pairs)", ""]
    elif not tested:
        lines += ["No pair has two common seeds: no interval, nothing is resolved.", ""]
    else:
        lines += ["Resolved: " + ("; ".join(resolved) if resolved else "none") + ".", ""]
    return lines


def _p(p: float | None) -> str:
    return "-" if p is None else (f"{p:.2e}" if p < 1e-3 else f"{p:.4f}")


def _mean_max(stats: dict | None) -> str:
    return "-" if stats is None else f"{fmt(stats['mean'], 3)} / {fmt(stats['max'], 3)}"


def stability_section(summary: dict, names: dict[str, str]) -> list[str]:
    groups = summary["groups"]
    lines = ["## Stability", ""]
    recorded = {g: e["stability"] for g, e in groups.items() if e.get("stability")}
    if recorded:
        definitions = sorted({d for s in recorded.values()
                              for d in ([s["spike_definition"]] if isinstance(s["spike_definition"], str)
                                        else s["spike_definition"])})  # fmt: skip
        p99s = sorted({s["p99_definition"] for s in recorded.values() if s.get("p99_definition")})
        p99 = f" p99: {'; '.join(p99s)}." if p99s else ""
        lines += ["Every training step after warm-up, as each run's `DONE` records it: gradient norm (before "
                  "clipping) max and 99th percentile per run, then mean and max over seeds; loss spikes summed "
                  "over seeds. Spike definition: " + "; ".join(definitions) + "." + p99, ""]  # fmt: skip
        rows = []
        for g, s in recorded.items():
            gmax, gp99 = s["grad_norm_max"], s["grad_norm_p99"]
            missing = ", ".join(map(str, s["missing_seeds"])) or "-"
            rows.append([names[g], len(s["seeds"]), _mean_max(gmax), _mean_max(gp99), s["loss_spikes"]["total"],
                         missing])  # fmt: skip
        header = ["group", "seeds", "grad norm max (mean / max over seeds)", "grad norm p99 (mean / max over seeds)",
                  "loss spikes", "seeds without a record"]  # fmt: skip
        lines += [md_table(header, rows), ""]
    absent = [g for g in groups if g not in recorded]
    if absent:
        lines += [f"Logged rows only (no run of {', '.join(names[g] for g in absent)} records every step's "
                  f"stability): {summary['logged_rows_spike_definition']}.", ""]  # fmt: skip
        rows = [[names[g], fmt(groups[g]["stability_logged_rows"]["max_grad_norm"], 3),
                 groups[g]["stability_logged_rows"]["loss_spikes"]] for g in absent]  # fmt: skip
        lines += [md_table(["group", "max grad norm, logged rows (before clipping)", "loss spikes, logged rows "
                            "(all seeds)"], rows), ""]  # fmt: skip
    return lines
