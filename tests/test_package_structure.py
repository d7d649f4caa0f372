"""API conventions, checked (after scanpy's tests/test_package_structure.py)."""

import inspect

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
    src = "".join(inspect.getsource(m) for m in MODULES)
    assert "basicConfig" not in src
    assert 'filterwarnings("ignore")' not in src
