"""The scripts of analyses/ on the command line: --help (which trains nothing), and mistakes in one line with exit
status 2 and nothing written."""

import subprocess
import sys
from pathlib import Path

import pytest

ANALYSES = Path(__file__).resolve().parents[1] / "analyses"


def script(name: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ANALYSES / f"{name}.py"), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("name", ["fig2_attention_flow", "fig6_barrier"])
def test_help_says_what_a_figure_script_reads_and_writes(name, tmp_path):
    done = script(name, "--help", cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.startswith(f"usage: python analyses/{name}.py [")
    assert f"writes {name}.html" in done.stdout and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name, args, says", [
    ("fig5_accuracy", ["nope"], "nope is not a run directory"),
    ("fig5_accuracy", [], "runs"),  # no runs of reproduce's here
    ("fig6_barrier", ["a"], "Fig. 6 compares 2 runs, got 1: a"),
])
def test_a_figure_script_s_mistake_is_one_line_and_exit_2(name, args, says, tmp_path):
    done = script(name, *args, cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.startswith(f"{name}.py: error: ") and says in done.stderr
    assert done.stderr.count("\n") == 1 and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["finetune_study", "cluster_rule", "llc_outcomes"])
def test_help_of_a_study_script_prints_its_description_and_trains_nothing(name, tmp_path):
    done = script(name, "--help", cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.startswith("usage: ") and len(done.stdout.splitlines()) > 8
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name, args, says", [
    ("finetune_study", ["out", "0-7"], "argument SEEDS: is a number of seeds N >= 1 (seeds 0..N-1), got '0-7'"),
    ("cluster_rule", [], "the following arguments are required: RUN"),
    ("cluster_rule", ["nope"], "nope is not a run directory"),
    ("llc_outcomes", ["nope"], "nope is neither a run nor a directory of runs"),
])
def test_a_study_script_s_mistake_is_one_line_and_exit_2(name, args, says, tmp_path):
    done = script(name, *args, cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.startswith(f"{name}.py: error: ") and says in done.stderr
    assert done.stderr.count("\n") == 1 and list(tmp_path.iterdir()) == []
