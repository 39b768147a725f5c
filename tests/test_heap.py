"""Freed activations stay in the process: page faults of a step's pattern of allocations, counted in fresh processes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")

# Forty 2 MiB activations taken and freed, as an engine step does. Whether glibc's adaptive defaults
# give them back to the kernel at every step depends on the process (its thresholds adapt to what it
# freed before, and a heap that cannot grow in place is never trimmed), so the comparison fixes the
# other side: glibc's own initial thresholds, held still, under which each block is mapped alone and
# unmapped when freed.
STEPS = """
import ctypes, json, os, resource, sys, torch
from circuitpath.training.heap import keep_freed_memory
kept = keep_freed_memory()
if os.environ.get("RETURN_FREED"):
    ctypes.CDLL(None).mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD at glibc's initial value, no longer adapted
def step():
    blocks = [torch.empty(2**19).fill_(1.0) for _ in range(40)]
    del blocks
step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    step()
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
"""
COUNT = 'print(json.dumps({"kept": kept, "faults": faults}))'


def _run(code: str, **env) -> dict:
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# After its count, the process that kept its freed memory checks who sets the thresholds: the flag is
# cleared, the package's training and CLI modules are imported (which must not set it), a run is
# trained, the flag is cleared again and a command runs. One fresh process for three tests.
SETTERS = """
import sys
from circuitpath.training import heap
heap._kept = False
sys.path.insert(0, {tests!r})
from conftest import tiny_config
from circuitpath.cli import main
from circuitpath.training.train import train
imported = heap._kept
train(tiny_config(), {run!r}, progress=False)
trained = heap._kept
heap._kept = False
status = main(["sweep", "--summary", {missing!r}])
print(json.dumps({{"kept": kept, "faults": faults, "training": {{"before": imported, "after": trained}},
                  "command": {{"status": status, "kept": heap._kept}}}}))
"""


@pytest.fixture(scope="module")
def kept(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("heap")
    return _run(STEPS + SETTERS.format(tests=str(Path(__file__).parent), run=str(tmp / "run"),
                                         missing=str(tmp / "missing")))


def test_freed_blocks_are_reused_without_page_faults(kept):
    default = _run(STEPS + COUNT, CIRCUITPATH_MALLOC="default", RETURN_FREED="1")
    assert default["kept"] is False and kept["kept"] is True
    pages = 20 * 40 * 2**21 // 4096  # every page of every block, every step
    assert default["faults"] > pages // 2  # the pattern faults when freed blocks go back
    assert kept["faults"] < pages // 50


def test_training_on_the_cpu_sets_the_thresholds(kept):
    assert kept["training"] == {"before": False, "after": True}


def test_every_command_sets_the_thresholds(kept):
    assert kept["command"] == {"status": 2, "kept": True}


def test_an_unknown_setting_is_refused_in_one_line(tmp_path, capsys, monkeypatch):
    from circuitpath.cli import main
    from circuitpath.training import heap

    monkeypatch.setattr(heap, "_kept", False)  # as in a fresh process: the setting is read at the first call
    monkeypatch.setenv("CIRCUITPATH_MALLOC", "off")
    assert main(["sweep", "--summary", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == \
        "circuitpath: error: CIRCUITPATH_MALLOC must be 'kept' or 'default', got 'off'"
