"""A worker process of `processes.train_in_processes`: `python -m circuitpath.training.worker ORDER`.

The parent (processes.py) splits the runs, starts the workers and watches them; each worker resumes
its share here, through the same entry point as every other training (`train.resume_groups`). The
parent holds each worker's stdin open while it lives: when it ends, however it ends (killed, its
terminal closed), the worker sees the end of its stdin and stops as Ctrl-C stops it, at a step with
everything saved, instead of training on unwatched and holding its runs' locks.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading

from circuitpath import errors
from circuitpath.training.loop import Interrupted
from circuitpath.training.train import resume_groups


def _stop_when_the_parent_ends() -> None:
    """Send this process Ctrl-C when its stdin ends: the parent, which holds it open, has ended."""
    def watch() -> None:
        # the parent never writes: the read returns at the end only. os.read, not sys.stdin: a daemon thread
        # blocked inside sys.stdin's buffer holds its lock, and the interpreter aborts at exit taking it
        while os.read(sys.stdin.fileno(), 4096):
            pass
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _main() -> None:
    """In a worker process: resume each group's share in turn; print how it ended as one JSON line."""
    order = json.loads(sys.argv[1])
    if order.get("watch_stdin"):  # a parent of another version may leave stdin at its own (at its end: /dev/null)
        # SIGINT is how the parent (or, at its end, the watch) asks this worker to stop. A job started in the
        # background of a script inherits it ignored, and an ignored SIGINT would leave the worker training on
        # unwatched, holding its runs' locks: take it back from whatever the parent's own parent chose
        signal.signal(signal.SIGINT, signal.default_int_handler)
        _stop_when_the_parent_ends()
    try:
        for paths in order["shares"]:
            resume_groups([paths], progress=False, note_resume=order["note_resume"], workers=1,
                          allow_other_platform=order["allow_other_platform"])
    except Interrupted as stopped:
        outcome = {"ended": "interrupted", "step": stopped.step}
    except errors.CircuitPathError as error:
        outcome = {"ended": "error", "type": type(error).__name__, "message": str(error)}
    else:
        outcome = {"ended": "done"}
    try:
        print(json.dumps(outcome), flush=True)
    except BrokenPipeError:  # the parent has ended: nobody reads it
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


if __name__ == "__main__":
    _main()
