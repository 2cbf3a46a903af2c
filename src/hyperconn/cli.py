"""The ``hyperconn`` command. Each subsystem registers its own subcommands (``register(subparsers)``)."""

from __future__ import annotations

import argparse
import importlib
import sys

# (module with a register(subparsers) function, the commands it registers). The names are listed
# here so that a subsystem whose extra is not installed still shows its commands, which then say
# which extra to install (tests/test_cli.py checks the list against what the modules register).
SUBSYSTEMS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("hyperconn.demo", ("demo",)),
    ("hyperconn.data.commands", ("data",)),
    ("hyperconn.analysis.commands", ("analyze", "compare")),
    ("hyperconn.train.commands", ("train", "eval", "generate")),
    ("hyperconn.bench.commands", ("bench",)),
)


def _missing_extra(err: ImportError) -> str | None:
    """The install hint when ``err`` is an optional dependency that is not installed."""
    from ._optional import EXTRA_OF, MissingExtraError

    if isinstance(err, MissingExtraError):
        return str(err)
    top = (getattr(err, "name", None) or "").split(".")[0]
    if isinstance(err, ModuleNotFoundError) and top in EXTRA_OF:
        return f"{top} is not installed; install it with: pip install 'hyperconn[{EXTRA_OF[top]}]'"
    return None


def _register_unavailable(subparsers, names: tuple[str, ...], hint: str) -> None:
    def fail(args) -> int:
        print(f"hyperconn {args.command}: error: {hint}", file=sys.stderr)
        return 2

    for name in names:
        p = subparsers.add_parser(name, help=f"(unavailable: {hint})", add_help=False)
        p.set_defaults(func=fail, unavailable=True)


def main(argv: list[str] | None = None) -> int:
    from . import __version__

    parser = argparse.ArgumentParser(prog="hyperconn", description="Spectral-Sphere-Constrained Hyper-Connections")
    parser.add_argument("--version", action="version", version=f"hyperconn {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module, names in SUBSYSTEMS:
        # imported here, not at the top: `hyperconn --help` stays fast and each subsystem owns its commands
        try:
            register = importlib.import_module(module).register
        except ImportError as err:
            hint = _missing_extra(err)
            if hint is None:
                raise
            _register_unavailable(subparsers, names, hint)
            continue
        register(subparsers)
    args, unknown = parser.parse_known_args(argv)
    if unknown and not getattr(args, "unavailable", False):
        parser.parse_args(argv)  # the usual "unrecognized arguments" error and exit
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        print(f"hyperconn {args.command}: error: {err}", file=sys.stderr)
        return 2
    except ImportError as err:  # an extra needed only by this command
        hint = _missing_extra(err)
        if hint is None:
            raise
        print(f"hyperconn {args.command}: error: {hint}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
