"""Every rule names a conda environment that pins what its code imports, at the tested versions.

Each rule's script imports milkcells modules, which import third-party packages (at the top or
inside functions); the closure of those imports, mapped to the distributions that provide them,
must be pinned in the rule's ``workflow/envs/*.yaml``, at the version of
``requirements/constraints.txt`` (the versions the test suite passed with), inside the range
``pyproject.toml`` allows, and the package must be one of pyproject's dependencies.
"""

import ast
import re
import sys
import tomllib
from functools import cache
from importlib.metadata import packages_distributions as _packages_distributions
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from .conftest import REPO

RULES = REPO / "workflow" / "rules"
ENVS = REPO / "workflow" / "envs"
SRC = REPO / "src"
RULE_HEAD = re.compile(r"^(?:rule|checkpoint)\s+(\w+):", re.M)
DIRECTIVE = re.compile(r"^\s{4}(\w+):\s*\n?\s*\"([^\"]+)\"", re.M)


def rule_blocks() -> dict[str, tuple[Path, str]]:
    """Rule name -> (rule file, the rule's text)."""
    blocks = {}
    for smk in sorted(RULES.glob("*.smk")):
        text = smk.read_text()
        heads = list(RULE_HEAD.finditer(text))
        for head, nxt in zip(heads, [*heads[1:], None], strict=False):
            blocks[head.group(1)] = (smk, text[head.start() : nxt.start() if nxt else len(text)])
    return blocks


def directive(block: str, name: str) -> str | None:
    for m in DIRECTIVE.finditer(block):
        if m.group(1) == name:
            return m.group(2)
    return None


def imported(path: Path) -> set[str]:
    """Absolute names imported anywhere in a file (relative imports resolved within milkcells)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                pkg = path.relative_to(SRC).with_suffix("").parts[: -node.level]
                base = ".".join([*pkg, node.module] if node.module else pkg)
            else:
                base = node.module
            names.add(base)
            # `from milkcells import qc`: the submodules
            names |= {f"{base}.{a.name}" for a in node.names}
    return names


packages_distributions = cache(_packages_distributions)


def module_file(name: str) -> Path | None:
    parts = name.split(".")
    for candidate in (SRC.joinpath(*parts).with_suffix(".py"), SRC.joinpath(*parts, "__init__.py")):
        if candidate.is_file():
            return candidate
    return None


@cache
def third_party(script: Path) -> frozenset[str]:
    """Distributions imported by a script and, transitively, by the milkcells modules it imports."""
    dists = packages_distributions()
    seen, todo, out = set(), [script], set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in imported(path):
            top = name.split(".")[0]
            if top == "milkcells":
                f = module_file(name)
                if f is not None:
                    todo.append(f)
                    # a subpackage (milkcells.archives) may load its modules by name (a registry)
                    if f.name == "__init__.py" and f.parent != SRC / "milkcells":
                        todo.extend(f.parent.glob("*.py"))
                    # a package's modules run its __init__ first
                    init = module_file(name.rsplit(".", 1)[0]) if "." in name else None
                    if init is not None:
                        todo.append(init)
            elif top not in sys.stdlib_module_names and top != "snakemake" and top in dists:
                out |= {canonicalize_name(d) for d in dists[top]}
    return frozenset(out)


def pins(env: Path) -> dict[str, str]:
    spec = yaml.safe_load(env.read_text())
    out = {}
    for dep in spec["dependencies"]:
        for line in dep["pip"] if isinstance(dep, dict) else []:
            name, _, version = line.partition("==")
            out[canonicalize_name(name)] = version
    return out


def constraints() -> dict[str, str]:
    out = {}
    for line in (REPO / "requirements" / "constraints.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, _, version = line.partition("==")
            out[canonicalize_name(name)] = version.strip()
    return out


def dependencies() -> dict[str, Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    return {canonicalize_name(r.name): r for r in reqs}


BLOCKS = rule_blocks()


def test_every_rule_has_an_environment():
    missing = [name for name, (_, block) in BLOCKS.items() if directive(block, "conda") is None]
    assert not missing
    for name, (smk, block) in BLOCKS.items():
        assert (smk.parent / directive(block, "conda")).resolve().is_file(), name


def test_environments_pin_tested_versions_within_pyproject():
    tested, deps = constraints(), dependencies()
    envs = sorted(ENVS.glob("*.yaml"))
    assert envs
    for env in envs:
        for name, version in pins(env).items():
            assert name in deps, f"{env.name}: {name} is not a dependency in pyproject.toml"
            assert version == tested[name], f"{env.name}: {name}=={version}, constraints.txt has {tested[name]}"
            assert deps[name].specifier.contains(version), f"{env.name}: {name}=={version} outside {deps[name]}"


@pytest.mark.parametrize("rule", sorted(BLOCKS))
def test_environment_covers_what_the_rule_imports(rule):
    smk, block = BLOCKS[rule]
    script = directive(block, "script")
    assert script is not None, f"rule {rule} runs no script"
    env = (smk.parent / directive(block, "conda")).resolve()
    needed = third_party((smk.parent / script).resolve())
    assert needed, f"rule {rule}: no third-party import found (the closure is broken)"
    missing = needed - set(pins(env)) - {"milkcells"}
    assert not missing, f"rule {rule}: {env.name} lacks {sorted(missing)}"
