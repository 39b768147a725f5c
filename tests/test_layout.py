"""The package's seam: domain modules (models, tasks, training, runs, analyses) never import figure code.

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


def figure_imports(path: Path) -> list[str]:
    here = module_name(path)
    found = imported(ast.parse(path.read_text()), here, path.name == "__init__.py")
    return sorted(n for n in found if any(n == f or n.startswith(f + ".") for f in FIGURE_CODE))


def domain_modules() -> list[Path]:
    every = sorted(PACKAGE.rglob("*.py"))
    return [p for p in every if p.relative_to(PACKAGE).parts[0] not in PRESENTERS + ORCHESTRATORS]


def test_domain_modules_import_no_figure_code():
    offenders = {str(p.relative_to(PACKAGE)): figure_imports(p) for p in domain_modules()}
    assert {path: names for path, names in offenders.items() if names} == {}


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
