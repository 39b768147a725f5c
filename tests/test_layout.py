"""The package's seams: domain modules (models, tasks, training, runs, analyses) never import figure code,
and the generic ones never import the paper's (its presets, claims, reproduce, fine-tune variants), so a
new model or task touches no paper code.

Read from the source with `ast`, so an import inside a function counts as much as one at the top.
"""

import ast
from pathlib import Path

import pytest

import circuitpath

PACKAGE = Path(circuitpath.__file__).parent
FIGURE_CODE = ("circuitpath.plots", "circuitpath.report")
#: Folders whose modules draw or present: they may import figure code.
PRESENTERS = ("plots", "report", "cli")
#: The paper's job, which ends by writing its report (a command more than a domain module).
ORCHESTRATORS = ("reproduce.py",)
#: The paper's own modules: its experiments and figure settings, its claims, its job, its fine-tune variants.
PAPER_CODE = ("circuitpath.presets", "circuitpath.claims", "circuitpath.reproduce", "circuitpath.variants",
              "circuitpath.experiments")
#: Generic modules allowed one paper import, and why: a sweep names the paper's experiments and presets
#: (`--experiments curriculum,vis_finetune`) and rebuilds their configs from sweep.json.
PAPER_REGISTRY = {"sweep/spec.py": {"circuitpath.experiments", "circuitpath.presets"}}


def module_name(path: Path) -> str:
    parts = ("circuitpath", *path.relative_to(PACKAGE).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(tree: ast.AST, here: str, is_package: bool) -> set[str]:
    """Every module an import statement in `tree` names, relative imports resolved against `here`."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = here.split(".")[: len(here.split(".")) + is_package - node.level] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            names |= {module} | {f"{module}.{alias.name}" for alias in node.names}
    return names


def imports_of(path: Path, modules: tuple[str, ...]) -> list[str]:
    """The imports in `path` of any of `modules` (or of anything inside them)."""
    found = imported(ast.parse(path.read_text()), module_name(path), path.name == "__init__.py")
    return sorted(n for n in found if any(n == f or n.startswith(f + ".") for f in modules))


def figure_imports(path: Path) -> list[str]:
    return imports_of(path, FIGURE_CODE)


def domain_modules() -> list[Path]:
    every = sorted(PACKAGE.rglob("*.py"))
    return [p for p in every if p.relative_to(PACKAGE).parts[0] not in PRESENTERS + ORCHESTRATORS]


def test_domain_modules_import_no_figure_code():
    offenders = {str(p.relative_to(PACKAGE)): figure_imports(p) for p in domain_modules()}
    assert {path: names for path, names in offenders.items() if names} == {}


def generic_modules() -> list[Path]:
    paper = {name.rsplit(".", 1)[1] + ".py" for name in PAPER_CODE}
    return [p for p in domain_modules() if str(p.relative_to(PACKAGE)) not in paper]


def test_generic_modules_import_no_paper_code():
    offenders = {}
    for path in generic_modules():
        allowed = PAPER_REGISTRY.get(str(path.relative_to(PACKAGE)), set())
        names = [n for n in imports_of(path, PAPER_CODE) if not any(n == a or n.startswith(a + ".") for a in allowed)]
        if names:
            offenders[str(path.relative_to(PACKAGE))] = names
    assert offenders == {}


def test_the_generic_walk_covers_models_tasks_training_runs_and_analyses():
    names = {str(p.relative_to(PACKAGE)) for p in generic_modules()}
    assert {"model.py", "transformer.py", "weights.py", "config.py", "data.py", "train.py", "stacked.py", "runs.py",
            "outcomes.py",
            "switching.py", "prediction.py", "sweep/summary.py", "analysis/llc.py", "analysis/models.py"} <= names
    assert not names & {"presets.py", "claims.py", "reproduce.py", "variants.py", "experiments.py"}


def test_the_walk_covers_the_domain():
    names = {str(p.relative_to(PACKAGE)) for p in domain_modules()}
    assert {"switching.py", "prediction.py", "analysis/llc.py", "data.py", "config.py"} <= names
    assert not any(name.startswith(("plots/", "report/", "cli/")) for name in names)


@pytest.mark.parametrize("source, is_package", [
    ("from circuitpath.plots.html import write_html", False),
    ("def f():\n    import circuitpath.report", False),
    ("from circuitpath import plots", False),
    ("from ..plots import llc", False),
    ("from .plots import html", True),
])
def test_the_check_sees_a_figure_import(source, is_package):
    here = "circuitpath" if is_package else "circuitpath.analysis.example"
    found = imported(ast.parse(source), here, is_package)
    assert any(n.startswith(FIGURE_CODE) for n in found), found


def test_the_check_passes_other_imports():
    found = imported(ast.parse("from circuitpath.plotting_free import x\nimport circuitpath.reports_free"),
                     "circuitpath.data", False)
    assert not any(n == f or n.startswith(f + ".") for n in found for f in FIGURE_CODE)
