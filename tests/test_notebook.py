"""notebooks/walkthrough.ipynb runs top to bottom (with few steps), so it cannot rot."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "walkthrough.ipynb"


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the kernel is a separate process


def test_walkthrough_runs_and_produces_its_figure(tmp_path):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    (index,) = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    # as papermill does: a cell after the parameters cell overrides them
    quick = f"flow_steps = 3\nrls_steps = 3\nrls_plus_steps = 2\nout_dir = {str(tmp_path)!r}"
    nb.cells.insert(index + 1, nbformat.v4.new_code_cell(quick))
    client = NotebookClient(nb, timeout=300, kernel_name="python3", allow_errors=False)
    client.execute(cwd=str(tmp_path))
    text = "".join(
        out.get("text", "") + "".join(out.get("data", {}).get("text/plain", ""))
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.outputs
    )
    assert "RLS   HR-PSNR" in text and "RLS+  HR-PSNR" in text and "flow NLL" in text
    assert "'flow'" in text  # the flow's held-out NLL next to the older priors
    assert (tmp_path / "grid.png").stat().st_size > 1000
    assert (tmp_path / "flow" / "flow.safetensors").is_file()
