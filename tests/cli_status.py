"""The exit status of `circuitpath ...` run in this process, whether it returns or argparse ends it."""

from circuitpath.cli import main


def exit_status(argv: list[str]) -> int:
    """main's status, also for the usage mistakes that argparse ends with SystemExit."""
    try:
        return main(argv)
    except SystemExit as done:
        return done.code
