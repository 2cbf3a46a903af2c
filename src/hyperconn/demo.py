"""``hyperconn demo``: the initial mixing matrices of every kind (until the trainer takes over the demo)."""

from __future__ import annotations

import torch

from .connections import available_connections, make_connection


def show_initial_mixing(num_streams: int = 4, dim: int = 16) -> None:
    torch.set_printoptions(precision=4, sci_mode=False)
    for kind in available_connections():
        n = 1 if kind == "residual" else num_streams
        conn = make_connection(kind, n, dim, layer_index=0)
        pre, res, post = conn.mixing(torch.randn(n, dim))
        print(f"== {kind} (n={n})\nH_pre  = {pre}\nH_post = {post}\nH_res  =\n{res}\n")


def register(subparsers) -> None:
    p = subparsers.add_parser("demo", help="show every kind's initial mixing matrices")
    p.add_argument("--streams", type=int, default=4)
    p.set_defaults(func=lambda args: show_initial_mixing(args.streams))
