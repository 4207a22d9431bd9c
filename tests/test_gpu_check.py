"""The GPU check runs every part at toy sizes on the CPU, so that it cannot rot between GPU sessions."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from zoo.models import list_models

ROOT = Path(__file__).resolve().parents[1]


def test_the_gpu_check_runs_on_the_cpu_and_records_every_part(tmp_path):
    output = tmp_path / "check.json"
    result = subprocess.run([sys.executable, "benchmarks/gpu.py", "--tiny", "--output", str(output)], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads(output.read_text())
    assert {"python", "torch", "lightning", "device"} <= set(record["versions"])
    estimators = {(row["dtype"], row["estimator"]) for row in record["estimators"]}
    assert {
        ("float32", "reinmax"),
        ("bfloat16", "reinmax"),
        ("float32", "reinmax (PyPI)"),
        ("float32", "st"),
    } <= estimators
    assert record["loop"]["eager"]["ratio"] > 0 and record["loop"]["compiled"]["ratio"] > 0
    assert "plain PyTorch, compiled" in record["loop"]["compiled"]["steady_epoch_s"]
    assert [row["model"] for row in record["compile"] if row.get("finite") and row["first_step_s"] > 0] == ["vae"]
    runs = {(row["model"], row["precision"]): row for row in record["training"]}
    assert {model for model, _ in runs} == set(list_models())
    for (model, precision), row in runs.items():
        assert "error" not in row, (model, precision, row["error"])
        assert row.get("finite") or row.get("skipped"), (model, precision, row)
    assert runs[("listops", "32-true")]["ms_per_batch"] > 0 and runs[("gdas", "32-true")]["ms_per_batch"] > 0
    assert "## Training through train.py" in result.stdout and f"-> {output}" in result.stdout
