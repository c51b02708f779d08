"""notebooks/Digit_recognizer.ipynb: stored without outputs, and runs top to bottom."""

from __future__ import annotations

import nbformat
import pandas as pd
import pytest
from ipykernel.kernelspec import write_kernel_spec
from nbclient import NotebookClient

from tests.conftest import REPO_ROOT

NOTEBOOK = REPO_ROOT / "notebooks" / "Digit_recognizer.ipynb"
REPORT_FIGURES = {"confusion_matrix.png", "misclassified.png", "training_curves.png",
                  "per_digit.png", "model_accuracy.png"}


def _pictures(cell) -> int:
    return sum("image/png" in output.get("data", {}) for output in cell.outputs)


def test_stored_notebook_is_valid_and_has_no_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code_cells
    assert all(cell.outputs == [] and cell.execution_count is None for cell in code_cells)
    assert notebook.metadata.kernelspec.name == "python3"


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_notebook_runs_top_to_bottom_on_the_fixture(kaggle_dir_readonly, tmp_path, monkeypatch):
    # A kernel spec for this very interpreter, so a fresh machine needs no `ipykernel install`.
    write_kernel_spec(tmp_path / "jupyter" / "kernels" / "python3")
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("DIGITS_PROFILE", "smoke")
    monkeypatch.setenv("DIGITS_DATA_DIR", str(kaggle_dir_readonly))
    monkeypatch.setenv("DIGITS_OUTPUT_DIR", str(tmp_path / "out"))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()

    run_dir = (tmp_path / "out" / "submissions" / "latest").resolve()
    submission = pd.read_csv(run_dir / "submission.csv")
    assert list(submission.columns) == ["ImageId", "Label"] and len(submission) == 300
    assert (tmp_path / "out" / "artifacts" / "tune" / "trials.csv").is_file()
    assert REPORT_FIGURES <= {path.name for path in run_dir.glob("*.png")}
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    plots = [_pictures(cell) for cell in code_cells]
    # Class balance, samples, mean digits, augmentation; then every report figure in one cell.
    assert sum(count == 1 for count in plots) >= 4
    assert max(plots) >= len(REPORT_FIGURES)
