"""The ``shc`` command. Each subsystem registers its own subcommands (``register(subparsers)``)."""

from __future__ import annotations

import argparse
import sys


def _registrars():
    # Imported lazily so that `shc --help` stays fast and each subsystem owns its commands. A command
    # module imports its extras (yaml, numpy...) inside the command, through shc._optional.require,
    # so a core-only install still parses every command and names the missing extra when one runs.
    from .analysis.commands import register as analysis
    from .bench.commands import register as bench
    from .data.commands import register as data
    from .demo import register as demo
    from .train.commands import register as train

    return [demo, data, analysis, train, bench]


def main(argv: list[str] | None = None) -> int:
    from . import __version__
    from ._optional import MissingExtraError

    parser = argparse.ArgumentParser(prog="shc", description="Spectral-Sphere-Constrained Hyper-Connections")
    parser.add_argument("--version", action="version", version=f"shc {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for register in _registrars():
        register(subparsers)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, FileExistsError, MissingExtraError) as err:
        print(f"shc {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
