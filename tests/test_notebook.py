"""examples/finetune.ipynb runs end to end, as a user runs it, with fewer fine-tuning steps."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from datamodules.images import ImageDataModule

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "examples" / "finetune.ipynb"


def test_the_fine_tuning_notebook_executes(monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    if ImageDataModule("fashion-mnist", download=False).idx_files() is None:
        pytest.skip("Fashion-MNIST is not on this machine (apt-get install dataset-fashion-mnist)")
    monkeypatch.setenv("FINETUNE_STEPS", "20")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(ROOT)}}).execute()
    printed = "".join(output.get("text", "") for cell in notebook.cells for output in cell.get("outputs", []))
    assert "vae-fashion-mnist-reinmax: test -ELBO" in printed
    assert "after 20 steps with ST: test -ELBO" in printed
    figures = [output for cell in notebook.cells for output in cell.get("outputs", [])
               if "image/png" in output.get("data", {})]
    assert figures, "the notebook drew no figure"
