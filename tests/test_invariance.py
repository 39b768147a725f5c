"""Same config, same bytes, under each of PyTorch's CPU kernel sets.

A run's arithmetic must not depend on the thread count or on the runs trained beside it. Each kernel
set (ATEN_CPU_CAPABILITY: this CPU's best, avx2, default) rounds in its own way, so each is checked
against itself, in a fresh process: a paper-size run (T = 12, d = 32, 2 048 sequences) of 60 steps,
a full-batch phase and a mini-batch phase, evaluated every 5 steps, trained alone on one thread,
alone with two threads asked for, and in a group of three on a pool of two workers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

SCRIPT = textwrap.dedent("""
    import hashlib, json, sys
    from pathlib import Path
    import torch
    from circuitpath import ModelConfig, RunConfig, TaskConfig, TrainConfig
    from circuitpath.config import parse_phases
    from circuitpath import train, train_many

    out = Path(sys.argv[1])

    def config(seed, lr):
        return RunConfig(task=TaskConfig(seed=seed), model=ModelConfig(seed=seed),
                         train=TrainConfig(phases=parse_phases(f"2:30:{lr},4:30:{lr}:32"), log_every=5,
                                           checkpoint_every=30, dense_checkpoints=0))

    def digest(run):
        files = sorted((run.path / "checkpoints").iterdir())
        h = hashlib.sha256()
        for f in files:
            h.update(f.read_bytes())
        return {"checkpoints": [f.name for f in files], "sha256": h.hexdigest(), "metrics": run.metrics}

    results = {"capability": torch.backends.cpu.get_cpu_capability()}
    target = config(7, 1e-2)
    for threads in (1, 2):
        torch.set_num_threads(threads)
        results[f"alone, {threads} thread(s)"] = digest(train(target, out / f"alone{threads}", progress=False))
    group = train_many([config(5, 3e-3), target, config(9, 3e-2)], [out / f"g{i}" for i in range(3)],
                       progress=False, workers=2)
    results["in a group of 3"] = digest(group[1])
    print(json.dumps(results))
""")


def _capabilities() -> list[str | None]:
    """This CPU's best kernel set (None: ATEN_CPU_CAPABILITY unset), and the lower ones every x86 CPU runs."""
    native = torch.backends.cpu.get_cpu_capability().lower()
    lower = [c for c in ("avx2", "default") if c != native]
    return [None, *lower]


@pytest.mark.parametrize("capability", _capabilities(), ids=lambda c: c or "native")
def test_a_run_is_the_same_bytes_alone_in_a_group_and_on_any_thread_count(tmp_path, capability):
    env = {k: v for k, v in os.environ.items() if k != "ATEN_CPU_CAPABILITY"}
    if capability is not None:
        env["ATEN_CPU_CAPABILITY"] = capability
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    ran = results.pop("capability")
    if capability is not None:
        assert ran.lower() == capability  # the kernel set asked for is the one that ran
    reference = results.pop("alone, 1 thread(s)")
    assert len(reference["checkpoints"]) >= 3 and len(reference["metrics"]) >= 12
    assert reference["metrics"][-1]["train_loss"] != reference["metrics"][0]["train_loss"]  # it trained
    for name, result in results.items():
        assert result["metrics"] == reference["metrics"], f"{ran}: metrics {name} differ from alone on one thread"
        assert result["sha256"] == reference["sha256"], f"{ran}: checkpoints {name} differ from alone on one thread"
