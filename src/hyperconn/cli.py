"""The ``hyperconn`` command. Each subsystem registers its own subcommands (``register(subparsers)``)."""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings

# (module with a register(subparsers) function, {command: one-line help}). The names and help are
# listed here so that `hyperconn --help` and `--version` answer without importing any subsystem (or
# torch), and a subsystem whose extra is not installed still shows its commands, which then say
# which extra to install. Only the module of the command given is imported (tests/test_cli.py checks
# the table against what the modules register).
SUBSYSTEMS: tuple[tuple[str, dict[str, str]], ...] = (
    (
        "hyperconn.demo",
        {
            "init-tour": "print every kind's initial mixing matrices (H_pre, H_post, H_res) as numbers",
            "demo": "the old name of init-tour",
        },
    ),
    (
        "hyperconn.data.commands",
        {
            "data": "tokenise a data source into the cache and print its statistics; "
            "`hyperconn data prepare` writes shards"
        },
    ),
    (
        "hyperconn.analysis.commands",
        {
            "analyze": "diagnostics of a trained run's mixing matrices (analysis.json, analysis.md, plots)",
            "compare": "train every run of a study (kinds x num_streams x axis values x seeds), analyse each, "
            "write report.md + summary.json",
        },
    ),
    (
        "hyperconn.train.commands",
        {
            "train": "train a language model with any connection",
            "eval": "validation loss and bits per byte of a run's latest checkpoint",
            "generate": "sample text from a trained run",
            "export": "consolidate a run's newest checkpoint (full or sharded) into one safetensors file",
            "plan": "bytes per rank and communication per step of each parallel layout, computed",
        },
    ),
    ("hyperconn.bench.commands", {"bench": "speed benchmarks (layer, training step, decode)"}),
)
HIDDEN = ("demo",)  # deprecated names: accepted, not listed


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("hyperconn")
    except PackageNotFoundError:  # a source tree that was never installed
        return "0.0.0+unknown"


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


def _parser() -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    parser = argparse.ArgumentParser(prog="hyperconn", description="Spectral-Sphere-Constrained Hyper-Connections")
    parser.add_argument("--version", action="version", version=f"hyperconn {_version()}")
    return parser, parser.add_subparsers(dest="command", required=True, metavar="COMMAND")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    module = next((m for m, names in SUBSYSTEMS if argv and argv[0] in names), None)
    parser, subparsers = _parser()
    if module is None:  # --help, --version, no or an unknown command: answered from the table alone
        for _, names in SUBSYSTEMS:
            for name, text in names.items():
                if name not in HIDDEN:
                    subparsers.add_parser(name, help=text, add_help=False)
        parser.parse_args(argv)  # prints and exits
        parser.error(f"{argv[0]!r} needs its subcommand's arguments")  # not reached: every name has a module
    with warnings.catch_warnings():  # restores the warning filters and printer when the command ends
        _renamed_as_lines(argv[0])
        return _run(module, argv, parser, subparsers)


def _renamed_as_lines(command: str) -> None:
    """Print each :class:`hyperconn.vocabulary.RenamedWarning` (an old flag or config key) as one
    line, ``hyperconn COMMAND: warning: --connection is deprecated; use --kind``, once per command;
    other warnings print as Python prints them. Call inside ``warnings.catch_warnings()``."""
    from .vocabulary import RenamedWarning

    seen: set[str] = set()
    show = warnings.showwarning

    def showwarning(message, category, filename, lineno, file=None, line=None):
        if not issubclass(category, RenamedWarning):
            return show(message, category, filename, lineno, file, line)
        if str(message) not in seen:
            seen.add(str(message))
            print(f"hyperconn {command}: warning: {message}", file=sys.stderr)

    warnings.simplefilter("always", RenamedWarning)
    warnings.showwarning = showwarning


def _run(module: str, argv: list[str], parser, subparsers) -> int:
    # imported here, not at the top: each subsystem owns its commands, and only the one asked for is loaded
    try:
        register = importlib.import_module(module).register
    except ImportError as err:
        hint = _missing_extra(err)
        if hint is None:
            raise
        _register_unavailable(subparsers, tuple(dict(SUBSYSTEMS)[module]), hint)
    else:
        register(subparsers)
    args, unknown = parser.parse_known_args(argv)
    if unknown and not getattr(args, "unavailable", False):
        parser.parse_args(argv)  # the usual "unrecognized arguments" error and exit
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        print(f"hyperconn {args.command}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # e.g. a disk that filled up or went read-only during the command
        print(
            f"hyperconn {args.command}: error: {err.strerror or err}: {err.filename or ''}".rstrip(": "),
            file=sys.stderr,
        )
        return 2
    except ImportError as err:  # an extra needed only by this command
        hint = _missing_extra(err)
        if hint is None:
            raise
        print(f"hyperconn {args.command}: error: {hint}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
