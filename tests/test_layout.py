"""The package's layout is its architecture: each subpackage imports only the layers below it, no two
modules import each other (directly or around a loop), domain modules never import figure code, and
the generic ones never import the paper's, so a new model or task touches no paper code.

Read from the source with `ast`, so an import inside a function counts as much as one at the top.
"""

import ast
from pathlib import Path

import networkx as nx
import pytest

import circuitpath

PACKAGE = Path(circuitpath.__file__).parent
FIGURE_CODE = ("circuitpath.plots", "circuitpath.paper.report")
#: Folders whose modules draw or present: they may import figure code.
PRESENTERS = ("plots", "paper/report", "cli")
#: The paper's job, which ends by writing its report (a command more than a domain module).
ORCHESTRATORS = ("paper/reproduce.py",)
#: The paper's own modules: its experiments and figure settings, its claims, its job, its fine-tune variants,
#: the inputs its figures probe, its report.
PAPER_CODE = ("circuitpath.paper",)
#: Generic modules allowed one paper import, and why: a sweep names the paper's experiments and presets
#: (`--experiments curriculum,vis_finetune`) and rebuilds their configs from sweep.json.
PAPER_REGISTRY = {"sweep/spec.py": {"circuitpath.paper.experiments", "circuitpath.paper.presets"}}

#: Modules at the top, shared by every layer: the package itself, the task and its configs, the errors,
#: and the platform a run's bytes depend on (`pinning` runs at `import circuitpath`, before torch loads;
#: `runs` records the platform and `training` checks it, so it sits below both).
BASE = {"circuitpath", "circuitpath.config", "circuitpath.data", "circuitpath.errors", "circuitpath.pinning",
        "circuitpath.platform"}
#: Each subpackage and the layers it may import (the base, and itself, always).
LAYERS = {
    "models": set(),
    "runs": {"models"},
    "training": {"models", "runs"},
    "analysis": {"models", "runs", "training"},
    "sweep": {"models", "runs", "training", "analysis"},
    "plots": {"models", "runs", "training", "analysis", "sweep"},
    "paper": {"models", "runs", "training", "analysis", "sweep", "plots"},
    "cli": {"models", "runs", "training", "analysis", "sweep", "plots", "paper"},
}
#: The models need no more of the base than their config and errors.
MODELS_BASE = {"circuitpath.config", "circuitpath.errors"}


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
            module = from_module(node, here, is_package)
            names |= {module} | {f"{module}.{alias.name}" for alias in node.names}
    return names


def from_module(node: ast.ImportFrom, here: str, is_package: bool) -> str:
    """The module a `from ... import` names, resolved against `here` when relative."""
    base = here.split(".")[: len(here.split(".")) + is_package - node.level] if node.level else []
    return ".".join([*base, *([node.module] if node.module else [])])


def imports_of(path: Path, modules: tuple[str, ...]) -> list[str]:
    """The imports in `path` of any of `modules` (or of anything inside them)."""
    found = imported(ast.parse(path.read_text()), module_name(path), path.name == "__init__.py")
    return sorted(n for n in found if any(n == f or n.startswith(f + ".") for f in modules))


def figure_imports(path: Path) -> list[str]:
    return imports_of(path, FIGURE_CODE)


def relative(path: Path) -> str:
    return path.relative_to(PACKAGE).as_posix()


def domain_modules() -> list[Path]:
    every = sorted(PACKAGE.rglob("*.py"))
    return [p for p in every
            if not relative(p).startswith(tuple(f + "/" for f in PRESENTERS)) and relative(p) not in ORCHESTRATORS]


def test_domain_modules_import_no_figure_code():
    offenders = {relative(p): figure_imports(p) for p in domain_modules()}
    assert {path: names for path, names in offenders.items() if names} == {}


def generic_modules() -> list[Path]:
    return [p for p in domain_modules() if not relative(p).startswith("paper/")]


def test_generic_modules_import_no_paper_code():
    offenders = {}
    for path in generic_modules():
        allowed = PAPER_REGISTRY.get(relative(path), set())
        names = [n for n in imports_of(path, PAPER_CODE) if not any(n == a or n.startswith(a + ".") for a in allowed)]
        if names:
            offenders[relative(path)] = names
    assert offenders == {}


def test_the_generic_walk_covers_models_tasks_training_runs_and_analyses():
    names = {relative(p) for p in generic_modules()}
    assert {"models/model.py", "models/transformer.py", "models/weights.py", "config.py", "data.py",
            "training/train.py", "training/stacked.py", "runs/__init__.py", "analysis/outcomes.py",
            "sweep/switching.py", "analysis/prediction.py", "sweep/summary.py", "analysis/llc.py",
            "analysis/models.py"} <= names
    assert not any(name.startswith("paper/") for name in names)


def test_the_walk_covers_the_domain():
    names = {relative(p) for p in domain_modules()}
    assert {"sweep/switching.py", "analysis/prediction.py", "analysis/llc.py", "data.py", "config.py",
            "paper/claims.py"} <= names
    assert not any(name.startswith(("plots/", "paper/report/", "cli/")) for name in names)


@pytest.mark.parametrize("source, is_package", [
    ("from circuitpath.plots.html import write_html", False),
    ("def f():\n    import circuitpath.paper.report", False),
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


# ---- layers and cycles -------------------------------------------------------------------------------
def import_targets(tree: ast.AST, here: str, is_package: bool) -> list[tuple[str, ...]]:
    """Per imported name, where it may come from, first choice first: `from X import name` is X.name when
    that is a module, else X; `import X.Y` is X.Y."""
    targets = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets += [(alias.name,) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = from_module(node, here, is_package)
            targets += [(f"{module}.{alias.name}", module) for alias in node.names]
    return targets


def module_graph(package: Path) -> nx.DiGraph:
    """Module -> the modules it imports."""
    paths = {}
    for path in sorted(package.rglob("*.py")):
        parts = (package.name, *path.relative_to(package).with_suffix("").parts)
        paths[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = nx.DiGraph()
    graph.add_nodes_from(paths)
    for name, path in paths.items():
        for choices in import_targets(ast.parse(path.read_text()), name, path.name == "__init__.py"):
            target = next((c for c in choices if c in paths), None)
            if target is not None and target != name:
                graph.add_edge(name, target)
    return graph


def layer(module: str) -> str:
    """`base`, or the subpackage `module` lives in; a module at the top outside BASE has none ('')."""
    if module in BASE:
        return "base"
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else ""


def layer_violations(graph: nx.DiGraph) -> dict[str, list[str]]:
    """Each module's imports that its layer's rule does not allow."""
    offenders = {}
    for name in graph:
        here = layer(name)
        allowed = {"base"} if here == "base" else {"base", here, *LAYERS[here]}
        registry = PAPER_REGISTRY.get("/".join(name.split(".")[1:]) + ".py", set())
        bad = [t for t in graph.successors(name) if layer(t) not in allowed and t not in registry]
        if here == "models":
            bad += [t for t in graph.successors(name) if layer(t) == "base" and t not in MODELS_BASE]
        if bad:
            offenders[name] = sorted(bad)
    return offenders


def test_every_module_has_a_layer():
    assert [m for m in module_graph(PACKAGE) if layer(m) not in {"base", *LAYERS}] == []


def test_each_subpackage_imports_only_the_layers_below_it():
    assert layer_violations(module_graph(PACKAGE)) == {}


def test_no_module_imports_itself_around_a_loop():
    assert list(nx.simple_cycles(module_graph(PACKAGE))) == []


def test_the_layers_are_ordered():
    """Every rule only looks down: the layers, in order, each allow only those before them."""
    order = list(LAYERS)
    assert all(allowed <= set(order[:i]) for i, allowed in enumerate(LAYERS.values()))


def test_the_layer_check_sees_an_upward_import():
    graph = nx.DiGraph([("circuitpath.models.model", "circuitpath.training.engine"),
                        ("circuitpath.models.weights", "circuitpath.data"),
                        ("circuitpath.runs", "circuitpath.paper.claims"),
                        ("circuitpath.training.train", "circuitpath.runs")])
    assert layer_violations(graph) == {"circuitpath.models.model": ["circuitpath.training.engine"],
                                       "circuitpath.models.weights": ["circuitpath.data"],
                                       "circuitpath.runs": ["circuitpath.paper.claims"]}


def test_the_layer_check_knows_a_stray_top_module():
    assert layer("circuitpath.engine") == "" and layer("circuitpath.runs") == "runs"
    assert layer("circuitpath.config") == "base" and layer("circuitpath.sweep.switching") == "sweep"


def test_the_cycle_check_sees_a_loop(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "a.py").write_text("def f():\n    from pkg.sub import b\n")
    (package / "sub" / "b.py").write_text("from pkg import a\n")
    (package / "c.py").write_text("from pkg.sub.b import name\n")
    graph = module_graph(package)
    assert sorted(map(sorted, nx.simple_cycles(graph))) == [["pkg.a", "pkg.sub.b"]]
    assert graph.has_edge("pkg.c", "pkg.sub.b") and not graph.has_edge("pkg.c", "pkg.sub")
    assert not graph.has_edge("pkg.sub.b", "pkg")  # `from pkg import a` imports the module a
