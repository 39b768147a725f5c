"""The `circuitpath` command line.

Every mistake a user can make ends in one line on stderr and exit status 2; Ctrl-C (or SIGTERM) during training
saves a checkpoint and exits with status 130. Each module of this package registers its commands:
`training` (train), `paper` (reproduce), `sweeping` (sweep), `probing` (analyze, patch, ablate,
diagram, show), `discovery` (discover) and `branching` (branch, switch, predict, llc).
"""

from __future__ import annotations

import argparse
import sys
from importlib import metadata
from typing import Sequence

from circuitpath import pinning
from circuitpath.errors import CircuitPathError
from circuitpath.training.heap import keep_freed_memory


class OneLineParser(argparse.ArgumentParser):
    """Usage mistakes end like every other error: one line naming the bad value, exit status 2."""

    def error(self, message: str):
        command = self.prog.partition(" ")[2]
        self.exit(2, f"circuitpath: error: {command + ': ' if command else ''}{message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from circuitpath.cli import branching, discovery, paper, probing, sweeping, training

    parser = OneLineParser(
        prog="circuitpath",
        description="Train a one-layer cross-attention transformer on sparse modular addition, save "
        "checkpoints along training, and analyse them (Odonnat, Bouaziz, Cabannes, ICASSP 2025).",
    )
    parser.add_argument("--pinning", help="the CPU kernels to run: compatible (the same bytes on Intel and AMD "
                        "CPUs with AVX-512), avx2 (about twice as fast at d = 32: the same bytes on AMD CPUs, other "
                        f"bytes on Intel's) or native (this CPU's fastest); default ${pinning.ENV} or {pinning.DEFAULT}")
    parser.add_argument("--version", action="version", version=f"circuitpath {metadata.version('circuitpath')}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    training.add_parsers(sub)
    sweeping.add_parsers(sub)
    paper.add_parsers(sub)
    probing.add_parsers(sub)
    discovery.add_parsers(sub)
    branching.add_parsers(sub)
    parser.set_defaults(commands=sub.choices)  # name -> its parser, whose --help an unknown flag points to
    return parser


def parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """The arguments; a flag the command does not know is its command's mistake, pointing to its --help."""
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        args.commands[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    _refuse_empty(parser, argv)
    args = parse(parser, argv)
    try:
        _pin(args.pinning)
        keep_freed_memory()  # training and analyses retake the memory they free at every step or checkpoint
        return args.handler(args)
    except KeyboardInterrupt:
        print("circuitpath: interrupted", file=sys.stderr)
        return 130
    except CircuitPathError as error:
        print(f"circuitpath: error: {error}", file=sys.stderr)
        return 2
    except Exception as stop:
        if not _interrupted(stop):
            raise
        print(f"circuitpath: {stop}", file=sys.stderr)
        return 130


#: Flags whose empty value means something: `--over ''` patches or ablates the whole activation, no axis.
EMPTY_MEANS = {"--over"}


def _refuse_empty(parser: argparse.ArgumentParser, argv: list[str]) -> None:
    """An empty value (`--seeds ''`, `--out=`) is a mistake, not a request for the default (which may be a full-size
    sweep, or the current directory for a path): it is refused in one line, but where EMPTY_MEANS it has a meaning."""
    for index, token in enumerate(argv):
        flag, equals, value = token.partition("=")
        if token == "":
            given = argv[index - 1] if index and argv[index - 1].startswith("-") else f"argument {index + 1}"
        elif flag.startswith("--") and equals and not value:
            given = flag
        else:
            continue
        if given not in EMPTY_MEANS:
            parser.error(f"{given} is given an empty value; leave it out for its default")


def _pin(name: str | None) -> None:
    """Apply --pinning (before any kernel: no command has run torch yet), or say what pinning at import left to say."""
    if name is None:
        pinning.announce()
        return
    for line in pinning.pin(name):
        print(f"circuitpath: {line}", file=sys.stderr)


def _interrupted(error: Exception) -> bool:
    """Whether training stopped on Ctrl-C or SIGTERM after saving (`loop.Interrupted`). Only a command that
    trained can raise it, and that command imported the loop (and torch): no other command waits for them."""
    loop = sys.modules.get("circuitpath.training.loop")
    return loop is not None and isinstance(error, loop.Interrupted)

