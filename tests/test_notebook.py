import nbformat
import pytest
from nbclient import NotebookClient

from .conftest import REPO


@pytest.mark.workflow
def test_demo_notebook_runs(tmp_path):
    nb = nbformat.read(REPO / "notebooks" / "milkcells_demo.ipynb", as_version=4)
    NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    # the agreement cell printed real figures
    text = "".join(str(o.get("data", {}).get("text/plain", "")) for o in outputs)
    assert "compartment_accuracy" in text
