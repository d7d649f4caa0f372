"""milkcells.archives: the registry, the interface every archive module has, and their shared code."""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest

from milkcells import InputError, archives
from milkcells.archives._common import url_join


def test_registry_lists_the_archive_modules():
    assert {"biostudies", "cellxgene", "scp", "urls"} <= set(archives.names())  # a new module joins by itself
    for name in archives.names():
        module = archives.get(name)
        assert module.NAME == name and isinstance(module.CARRIES_AUTHOR_LABELS, bool)
        assert getattr(archives, name) is module  # archives.biostudies.prepare works in a notebook
        params = inspect.signature(module.prepare).parameters
        assert list(params)[0] == "out_dir"
        assert {"mirror": None, "retries": 5, "backoff": 0.5} == {
            k: params[k].default for k in ("mirror", "retries", "backoff")
        }
        assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in list(params.values())[1:])
    assert [n for n in ("biostudies", "cellxgene", "scp", "urls") if archives.get(n).CARRIES_AUTHOR_LABELS] == [
        "cellxgene",
        "scp",
    ]


def test_unknown_archive_names_the_known_ones():
    with pytest.raises(InputError, match="unknown archive 'geo'") as e:
        archives.get("geo")
    assert e.value.field == "archive" and "biostudies" in e.value.expected and "urls" in e.value.expected
    with pytest.raises(AttributeError):
        archives.geo  # noqa: B018


def test_local_inputs():
    assert archives.get("scp").local_inputs({"counts": "c.txt.gz", "metadata": "m.csv"}) == ["c.txt.gz", "m.csv"]
    assert archives.get("urls").local_inputs({"url_list": "u.tsv"}) == ["u.tsv"]
    assert archives.get("biostudies").local_inputs({}) == archives.get("cellxgene").local_inputs({}) == []


def test_no_import_cycle():
    """Each archive module imports on its own, in a fresh interpreter, first of all."""
    for name in archives.names():
        code = f"import milkcells.archives.{name}"
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


@pytest.mark.parametrize("name", archives.names())
def test_public_functions_documented_and_keyword_only(name):
    module = archives.get(name)
    for name in module.__all__:
        obj = getattr(module, name)
        if not inspect.isfunction(obj):
            continue
        doc = inspect.getdoc(obj)
        # local_inputs' return value is the interface's (milkcells.archives' docstring)
        assert doc and ("Returns" in doc or name == "local_inputs"), name
        params = list(inspect.signature(obj).parameters.values())
        positional = [p for p in params if p.kind is not inspect.Parameter.KEYWORD_ONLY]
        # data arguments are positional; every option is keyword-only
        assert len(positional) <= 2, (name, [p.name for p in positional])
        assert all(p.default is inspect.Parameter.empty for p in positional), name
    src = inspect.getsource(module)
    assert "basicConfig" not in src and 'filterwarnings("ignore")' not in src


def test_url_join():
    base = "https://ftp.ebi.ac.uk/biostudies/fire/"
    want = "https://ftp.ebi.ac.uk/biostudies/fire/E-MTAB-/841/E-MTAB-9841/Files/matrix.mtx.gz"
    assert url_join(base, "E-MTAB-/841/E-MTAB-9841", "Files", "matrix.mtx.gz") == want
    assert url_join(base.rstrip("/"), "/E-MTAB-/841/E-MTAB-9841/", "/Files/matrix.mtx.gz") == want
    assert url_join("http://127.0.0.1:8000", "a//", "", "b/") == "http://127.0.0.1:8000/a/b/"
    assert url_join("http://h:8000/x/", "my file.txt") == "http://h:8000/x/my%20file.txt"
    assert url_join("http://h/x", "a%20b") == "http://h/x/a%20b"
    assert url_join("http://h/x/") == "http://h/x/"
