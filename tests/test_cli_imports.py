"""`circuitpath --help` answers without importing torch: heavy modules load with the command that needs them."""

import subprocess
import sys

import pytest

import circuitpath

HEAVY = ("torch", "numpy", "plotly", "transformer_lens")
PARSE = """
import sys
from circuitpath.cli import main
try:
    main({argv!r})
except SystemExit as done:
    assert done.code == 0, done.code
print("loaded:", *[name for name in {heavy!r} if name in sys.modules], file=sys.stderr)
"""


def loaded_after(code: str) -> list[str]:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stderr.strip().splitlines()[-1].split()[1:]


@pytest.mark.parametrize("argv", [["--help"], ["discover", "--help"], ["train", "--help"], ["sweep", "--help"],
                                  ["show", "--help"], ["reproduce", "--help"], ["branch", "--help"]])
def test_help_imports_no_heavy_module(argv):
    assert loaded_after(PARSE.format(argv=argv, heavy=HEAVY)) == []


def test_the_check_sees_a_heavy_import():
    code = PARSE.format(argv=["--help"], heavy=HEAVY).replace("import sys\n", "import sys\nimport torch\n", 1)
    assert "torch" in loaded_after(code)


def test_the_package_names_load_on_first_use():
    code = ("import sys, circuitpath as cp\n"
            "before = 'torch' in sys.modules\n"
            "import circuitpath.training.train\n"  # binds `training.train`, never the package's `train` (the function)
            "assert callable(cp.train) and cp.train.__module__ == 'circuitpath.training.train', cp.train\n"
            "assert cp.load_run.__module__ == 'circuitpath.runs'\n"
            "import circuitpath.training.worker, circuitpath.training.branch\n"  # what a training process loads
            "print('loaded:', *(['torch'] if before else []),"
            " *(['transformer_lens'] if 'transformer_lens' in sys.modules else []), file=sys.stderr)\n")
    assert loaded_after(code) == []  # nor does training load TransformerLens (seconds a process)


def test_every_public_name_is_there():
    assert dir(circuitpath) == sorted([*circuitpath.__all__, "__version__"])  # not the modules it imports
    assert issubclass(circuitpath.NotApplicableError, circuitpath.CircuitPathError)
    for name in circuitpath.__all__:
        assert getattr(circuitpath, name) is not None, name
    with pytest.raises(AttributeError, match="has no attribute 'nothing'"):
        circuitpath.nothing  # noqa: B018


def test_show_reads_and_checks_a_run_without_importing_torch(trained_run):
    code = PARSE.format(argv=["show", str(trained_run.path)], heavy=HEAVY)
    assert loaded_after(code) == []
