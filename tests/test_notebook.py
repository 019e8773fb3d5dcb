"""notebooks/tour.ipynb runs top to bottom in a fresh python3 kernel (this venv's), without cell errors,
and prints/plots what it promises."""

import os
import sys

import nbformat
from nbclient import NotebookClient

from conftest import ROOT


def test_tour_notebook_executes(tmp_path, monkeypatch):
    nb = nbformat.read(ROOT / "notebooks" / "tour.ipynb", as_version=4)
    monkeypatch.setenv("TOUR_WORKDIR", str(tmp_path / "tour"))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    # kernel "python3" from ipykernel in this venv runs this interpreter
    client = NotebookClient(nb, kernel_name="python3", timeout=300, allow_errors=False,
                            resources={"metadata": {"path": str(ROOT)}})
    client.execute()  # raises CellExecutionError on the first failing cell
    outs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    errors = [o for o in outs if o.get("output_type") == "error"]
    assert not errors, errors
    text = "".join(o.get("text", "") for o in outs if o.get("output_type") == "stream")
    for expected in ("crosscoded:", "crosscoder input", "trained:", "task accuracy:", "RelIE_", "RELIE_PLOTTED",
                     "best property", "REPORT_WRITTEN", "TOUR_DONE"):
        assert expected in text, (expected, text[-2000:])
    images = [o for o in outs if "image/png" in o.get("data", {})]
    assert images, "the plot cell shows no figure"
    assert (tmp_path / "tour" / "report" / "report.html").exists()
    kernel_python = text.split("KERNEL_PYTHON", 1)[1].split()[0]
    assert os.path.realpath(kernel_python) == os.path.realpath(sys.prefix), kernel_python  # this venv
