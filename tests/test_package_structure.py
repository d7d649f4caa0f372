"""API conventions, checked (after scanpy's tests/test_package_structure.py)."""

import ast
import inspect
import re
from pathlib import Path

import pytest

import milkcells

MODULES = [getattr(milkcells, m) for m in milkcells.__all__ if inspect.ismodule(getattr(milkcells, m))]
FUNCS = [
    (mod.__name__, name, obj)
    for mod in MODULES
    for name in getattr(mod, "__all__", [])
    if inspect.isfunction(obj := getattr(mod, name))
]


def test_modules_declare_all():
    for mod in MODULES:
        assert hasattr(mod, "__all__"), mod.__name__
        for name in mod.__all__:
            assert hasattr(mod, name), f"{mod.__name__}.{name}"


def test_all_lists_exactly_the_functions_and_classes_a_module_defines():
    # public functions and classes are listed where they are defined, and nowhere else (no re-exports)
    for mod in MODULES:
        if mod is milkcells:
            continue
        defined = {
            n
            for n, o in vars(mod).items()
            if (inspect.isfunction(o) or inspect.isclass(o)) and not n.startswith("_") and o.__module__ == mod.__name__
        }
        listed = {n for n in mod.__all__ if inspect.isfunction(getattr(mod, n)) or inspect.isclass(getattr(mod, n))}
        assert listed == defined, (
            f"{mod.__name__}: not listed {sorted(defined - listed)}, not its own {sorted(listed - defined)}"
        )


def test_every_module_of_the_package_is_listed():
    root = Path(milkcells.__file__).parent
    names = {p.stem for p in root.glob("*.py") if not p.stem.startswith("_")}
    names |= {p.parent.name for p in root.glob("*/__init__.py")}  # subpackages (archives)
    assert names == set(milkcells._MODULES)


@pytest.mark.parametrize(("mod", "name", "func"), FUNCS, ids=[f"{m}.{n}" for m, n, _ in FUNCS])
def test_public_function_conventions(mod, name, func):
    doc = inspect.getdoc(func)
    assert doc and len(doc) > 20, f"{mod}.{name} needs a docstring"
    params = list(inspect.signature(func).parameters.values())
    if any(p.name == "adata" for p in params):
        assert params[0].name == "adata", f"{mod}.{name}: adata must come first"
        # after adata (and at most one more positional, such as the compartment), keyword-only
        positional = [p for p in params[1:] if p.kind is not inspect.Parameter.KEYWORD_ONLY]
        assert len(positional) <= 1, f"{mod}.{name}: {[p.name for p in positional]} should be keyword-only"
    n_params = len([p for p in params if p.name != "adata"])
    if n_params >= 4:
        assert "Parameters" in doc or "Returns" in doc, f"{mod}.{name}: document parameters/returns"


def test_no_logging_config_or_warning_filters_at_import():
    # milkcells.logs.setup_rule configures logging: for a rule script, which calls it
    src = "".join(inspect.getsource(m) for m in MODULES if m.__name__ != "milkcells.logs")
    assert "basicConfig" not in src
    assert 'filterwarnings("ignore")' not in src


SRC = Path(milkcells.__file__).parent
REPO = SRC.parents[1]


def _milkcells_imports(path: Path) -> set[str]:
    """The milkcells modules a module of the package imports (anywhere in it: top level or in a function)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level == 1:
                base = f"milkcells.{base}" if base else "milkcells"
            elif node.level or not (base == "milkcells" or base.startswith("milkcells.")):
                continue
            if base == "milkcells":  # from . import x: x may be a module
                out |= {f"milkcells.{a.name}" for a in node.names if (SRC / f"{a.name}.py").exists()}
            else:
                out.add(base.split(".")[0] + "." + base.split(".")[1])
        elif isinstance(node, ast.Import):
            out |= {".".join(a.name.split(".")[:2]) for a in node.names if a.name.startswith("milkcells.")}
    return out - {"milkcells"}


def test_no_import_cycle_among_modules():
    graph = {f"milkcells.{p.stem}": _milkcells_imports(p) for p in SRC.glob("*.py") if p.stem != "__init__"}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(mod, path):
        state[mod] = 1
        for dep in sorted(graph.get(mod, ())):
            if state.get(dep) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*path[path.index(dep) :], dep]))
            if dep not in state:
                visit(dep, [*path, dep])
        state[mod] = 2

    for mod in sorted(graph):
        if mod not in state:
            visit(mod, [mod])


def _private_imports_in_script(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    found, modules = [], set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "milkcells":
            if any(part.startswith("_") for part in node.module.split(".")):
                found.append(f"from {node.module} import ...")
            for a in node.names:
                if a.name.startswith("_"):
                    found.append(f"from {node.module} import {a.name}")
                modules.add(a.asname or a.name)
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "milkcells":
                    if any(part.startswith("_") for part in a.name.split(".")):
                        found.append(f"import {a.name}")
                    modules.add(a.asname or a.name.split(".")[0])
    for node in ast.walk(tree):  # milkcells._x, cluster._y
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules:
            if node.attr.startswith("_") and not node.attr.startswith("__"):
                found.append(f"{node.value.id}.{node.attr}")
    return found


def test_workflow_uses_only_public_names():
    bad = {}
    for path in sorted((REPO / "workflow" / "scripts").glob("*.py")):
        if found := _private_imports_in_script(path):
            bad[path.name] = found
    private = re.compile(r"\bmilkcells(\.\w+)*\._\w+|from\s+milkcells\S*\s+import\s+.*\b_\w+")
    for path in [REPO / "Snakefile", *sorted((REPO / "workflow" / "rules").glob("*.smk"))]:
        if found := [m.group(0) for m in private.finditer(path.read_text())]:
            bad[path.name] = found
    assert not bad, f"the workflow imports private names: {bad}"


def test_every_stage_of_the_recipe_is_run_by_a_rule_with_its_settings():
    from milkcells import recipe

    scripts = {p.name: p.read_text() for p in (REPO / "workflow" / "scripts").glob("*.py")}
    rules = "".join(p.read_text() for p in (REPO / "workflow" / "rules").glob("*.smk"))
    for stage in recipe.STAGES:
        callers = [name for name, text in scripts.items() if f"recipe.{stage}(" in text]
        assert callers, f"no rule script calls recipe.{stage}"
        if recipe.STAGES[stage]:
            assert f'stage_config("{stage}", config)' in rules, f"no rule passes the settings of {stage}"


def test_modules_import_no_private_name_of_another_module():
    bad = []
    for path in SRC.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module and node.module != "_utils":
                bad += [
                    f"{path.stem}: from .{node.module} import {a.name}" for a in node.names if a.name.startswith("_")
                ]
    assert not bad, bad
