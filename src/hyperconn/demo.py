"""``hyperconn init-tour``: what every connection kind computes at initialisation, as plain numbers.

A hyper-connection keeps ``n`` residual streams ``x`` (``n x d``) and wraps a sublayer ``f`` as::

    x' = H_res x + H_post^T f(H_pre x)

``H_pre`` (``1 x n``) reads the sublayer's input from the streams, ``H_post`` (``1 x n``) writes its
output back, ``H_res`` (``n x n``) mixes the streams. For each kind the tour prints the three
matrices at initialisation (for one random input; the dynamic kinds depend on it), the row and
column sums of ``H_res`` and its distance from the identity ``||H_res - I||_F``. (``make demo``
is something else: it trains and compares models; :func:`overhead_note` is the sentence its
``hyperconn compare`` prints under the table.)
"""

from __future__ import annotations

DEPRECATED_NAME = "demo"  # the command's old name, still accepted with a notice
INTRO = (
    "Each kind wraps a sublayer f over n streams x as  x' = H_res x + H_post^T f(H_pre x):\n"
    "H_pre reads f's input from the streams, H_post writes f's output back, H_res mixes the streams.\n"
    "Below: the matrices at initialisation for one seeded random input (the dynamic kinds depend on it)."
)


def _row(values) -> str:
    return "[" + "  ".join(f"{v:7.4f}" for v in values) + "]"


def tour(num_streams: int = 4, dim: int = 16, seed: int = 0) -> str:
    """The tour's text: every kind's initial ``H_pre``, ``H_post``, ``H_res`` for one seeded input
    (``num_streams`` >= 2 for every kind but residual, which has 1; each kind's constructor checks it)."""
    import torch

    from .connections import available_connections, make_connection

    gen = torch.Generator().manual_seed(seed)
    lines = [INTRO, ""]
    for kind in available_connections():
        n = 1 if kind == "residual" else num_streams
        conn = make_connection(kind, n, dim, layer_index=0)
        with torch.no_grad():
            pre, res, post = (
                t.detach().double().reshape(-1, n) for t in conn.mixing(torch.randn(n, dim, generator=gen))
            )
        eye = torch.eye(n, dtype=res.dtype)
        lines += [
            f"== {kind} (n={n})",
            f"  H_pre  = {_row(pre[0].tolist())}",
            f"  H_post = {_row(post[0].tolist())}",
            "  H_res  = " + ("\n           ".join(_row(r) for r in res.tolist())),
            f"  H_res row sums {_row(res.sum(1).tolist())}, column sums {_row(res.sum(0).tolist())}, "
            f"||H_res - I||_F = {torch.linalg.norm(res - eye).item():.4f}",
            "",
        ]
    return "\n".join(lines)


def _run(args) -> int:
    import sys

    if args.command == DEPRECATED_NAME:
        print("hyperconn demo: note: the command is now `hyperconn init-tour` (demo will be removed)", file=sys.stderr)
    print(tour(args.num_streams))
    return 0


README_PRESET = "small"  # the preset of the README's speed figures (`hyperconn bench step`)


def overhead_note(cfg, summary: dict) -> str | None:
    """The sentence ``hyperconn compare`` (so ``make demo``) prints under its table: which preset and
    model the overhead column was measured for and, for a model narrower than the ``small`` preset's
    that the README's speed figures are for, why it is larger there. ``None`` when no overhead was
    measured. ``cfg``: the study's ``CompareConfig``; ``summary``: its summary."""
    if all(e.get("overhead_pct_vs_residual") is None for e in summary["groups"].values()):
        return None
    from .analysis.study import train_config
    from .model.presets import get_preset

    model = train_config(cfg, cfg.runs()[0]).model
    ref = get_preset(README_PRESET).model
    here = f"Overhead measured on this machine for preset {cfg.preset!r} ({model.n_layers} layers, d {model.dim})"
    readme = f"the README's speed figures are for preset {README_PRESET!r} ({ref.n_layers} layers, d {ref.dim})"
    if (model.n_layers, model.dim) == (ref.n_layers, ref.dim):
        return f"{here}, the model of the README's speed figures."
    if model.dim < ref.dim:
        return (
            f"{here}; {readme}: in a model this small each connection's fixed cost is a larger share "
            "of the step, so the overhead is larger here."
        )
    return f"{here}; {readme}."


def register(subparsers) -> None:
    from .vocabulary import add_renamed_flag

    p = subparsers.add_parser(
        "init-tour",
        aliases=[DEPRECATED_NAME],
        help="print every kind's initial mixing matrices (H_pre, H_post, H_res) as numbers",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("--num-streams", type=int, default=4, help="n, the number of streams (>= 2)")
    add_renamed_flag(p, "--streams", type=int)
    p.set_defaults(func=_run)
