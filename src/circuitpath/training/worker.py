"""A worker process of `processes.train_in_processes`: `python -m circuitpath.training.worker ORDER`.

The parent (processes.py) splits the runs, starts the workers and watches them; each worker resumes
its share here, through the same entry point as every other training (`train.resume_groups`).
"""

from __future__ import annotations

import json
import sys

from circuitpath import errors
from circuitpath.training.loop import Interrupted
from circuitpath.training.train import resume_groups


def _main() -> None:
    """In a worker process: resume each group's share in turn; print how it ended as one JSON line."""
    order = json.loads(sys.argv[1])
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
    print(json.dumps(outcome), flush=True)


if __name__ == "__main__":
    _main()
