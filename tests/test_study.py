"""Studies (``python -m zoo.study``): cells run as train.py runs, stop and continue, and report what they logged.

The polynomial toy trains in about a second, so a whole study runs in-process here;
``--jobs`` and the SLURM array run their cells as processes, as they do for users.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import statistics
import sys
from pathlib import Path

import lightning as L
import pytest
import yaml
from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator
from tensorboard.util.tensor_util import make_ndarray

from callbacks.run_summary import read_summary
from zoo.study.__main__ import main as study_main
from zoo.study.cell import HEARTBEAT_TIMEOUT, cell_state
from zoo.study.local import cell_environment, run_study
from zoo.study.report import REPORT_JSON, Rows, collect, draw, replace_section, write_report
from zoo.study.spec import StudyError, load_study

ROOT = Path(__file__).resolve().parents[1]
QUIET = {"enable_progress_bar": False, "enable_model_summary": False, "log_every_n_steps": 10}


def write_study(folder: Path, **content) -> Path:
    study = {"model": "poly", "settings": {"max_steps": 40, "model_options": {"variables": 4}, "trainer": QUIET},
             **content}
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(study, allow_unicode=True))
    return path


class SignalInThirdCell(L.Callback):
    """SIGTERM to this process at step 25 of the third cell trained: a scheduler stopping the study."""

    def __init__(self) -> None:
        self.cells = 0

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.cells += 1

    def on_train_batch_end(self, trainer: L.Trainer, *args) -> None:
        if self.cells == 3 and trainer.global_step == 25:
            os.kill(os.getpid(), signal.SIGTERM)


def logged(run: Path, tag: str) -> list[tuple[int, float]]:
    """``tag``'s points as TensorBoard's own reader gives them: the values the report must show."""
    accumulator = EventAccumulator(str(run), size_guidance={"tensors": 0})
    accumulator.Reload()
    return [(event.step, make_ndarray(event.tensor_proto).item()) for event in accumulator.Tensors(tag)]


def test_a_study_stops_continues_and_reports_the_values_its_runs_logged(tmp_path, capsys):
    path = write_study(tmp_path, title="two estimators", estimators={"reinmax": {}, "st": {"tau": 1.0, "label": "ST"}},
                       seeds=[0, 1], metrics={"train/expected_loss": "exact loss", "train/loss": "sampled loss"})
    study = yaml.safe_load(path.read_text())
    study["settings"]["grad_quality_every"] = 20  # the plot's last panel: the gradient's cosine to the exact one
    path.write_text(yaml.safe_dump(study, allow_unicode=True))
    study = load_study(path, tmp_path / "runs")
    assert [cell.name for cell in study.cells] == ["reinmax/seed0", "reinmax/seed1", "st/seed0", "st/seed1"]

    assert run_study(study, callbacks=[SignalInThirdCell()]) == 143
    assert [cell_state(study, cell).status for cell in study.cells] == ["finished", "finished", "interrupted",
                                                                        "pending"]
    capsys.readouterr()
    assert study_main(["status", str(path), "--output-dir", str(tmp_path / "runs")]) == 1
    status = capsys.readouterr().out
    assert "st/seed0       interrupted: stopped at step" in status and "2 finished, 1 interrupted, 1 pending" in status
    stopped_at = read_summary(study.run_folder(study.cells[2]))["last"]["step"]
    assert 25 <= stopped_at < 40

    assert run_study(study) == 0
    progress = capsys.readouterr().out
    assert "2 done, 2 to run" in progress and "started reinmax" not in progress
    assert "st/seed0 finished after" in progress and "1 of 2 left, about" in progress
    summaries = [read_summary(study.run_folder(cell)) for cell in study.cells]
    assert [summary["sittings"] for summary in summaries] == [1, 1, 2, 1]  # skipped, skipped, continued, new
    assert all(summary["last"]["step"] == 40 and summary["timed_steps"] == 40 for summary in summaries)

    text = write_report(study)
    report = json.loads((study.output_dir / REPORT_JSON).read_text())
    for cell, values in zip(study.cells, report["cells"]):
        for tag in ("train/expected_loss", "train/loss"):
            points = logged(study.run_folder(cell), tag)
            assert values["curves"][tag] == [[list(point) for point in points]]
            assert values["metrics"][tag]["end"] == [points[-1][1]]
    for label, cells in (("reinmax", report["cells"][:2]), ("ST", report["cells"][2:])):
        ends = [cell["metrics"]["train/expected_loss"]["end"][0] for cell in cells]
        assert f"| {label} | 2 | {statistics.mean(ends):.4f} ± {statistics.stdev(ends):.4f} |" in text

    figure = draw(study, Rows(study, collect(study)))
    assert [axis.get_ylabel() for axis in figure.axes] == ["train/expected_loss", "train/loss",
                                                          "grad_quality/ESTIMATOR/cosine"]
    for axis in figure.axes:  # a curve and a band per estimator, in each panel
        assert len(axis.lines) == 2 and len(axis.collections) == 2
    assert [text.get_text() for text in figure.legends[0].get_texts()] == ["reinmax", "ST"]
    assert (study.output_dir / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


class CtrlCInFirstCell(L.Callback):
    def on_train_batch_end(self, trainer: L.Trainer, *args) -> None:
        if trainer.global_step == 10:
            raise KeyboardInterrupt


def test_ctrl_c_stops_the_study_not_only_its_cell(tmp_path):
    study = load_study(write_study(tmp_path, estimators=["reinmax", "st"]), tmp_path / "runs")
    try:
        assert run_study(study, callbacks=[CtrlCInFirstCell()]) == 143
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)  # Lightning ignores Ctrl-C after one
    assert [cell_state(study, cell).status for cell in study.cells] == ["interrupted", "pending"]
    assert read_summary(study.run_folder(study.cells[0]))["status"] == "preempted"


def test_seeds_trained_as_replicas_are_reported_as_seeds_in_a_pivot_table(tmp_path):
    path = write_study(tmp_path, estimators=["reinmax"], grid={"pnorm": [2.0]}, replicas=3,
                       metrics={"train/expected_loss": "loss"}, table={"columns": "pnorm"},
                       published={"label": "optimum", "values": [{"pnorm": 2.0, "value": 0.2025}]})
    study = load_study(path, tmp_path / "runs")
    assert [cell.name for cell in study.cells] == ["reinmax/pnorm2.0-replicas"]
    assert run_study(study) == 0
    ends = [logged(study.run_folder(study.cells[0]), f"train/expected_loss/replica_{index}")[-1][1]
            for index in range(3)]
    text = write_report(study, tmp_path / "RESULTS.md")
    assert "| estimator | pnorm = 2.0 |" in text and "| optimum | 0.2025 |" in text
    assert (tmp_path / "RESULTS.md").read_text() == f"<!-- study study -->\n{text}<!-- end study study -->\n"
    assert "(results/studies/study.png)" in text and (tmp_path / "results" / "studies" / "study.png").is_file()
    assert f"| reinmax | {statistics.mean(ends):.4f} ± {statistics.stdev(ends):.4f} |" in text


def test_jobs_run_cells_as_processes_and_a_failed_cell_keeps_its_line(tmp_path, capsys):
    path = write_study(tmp_path, estimators={"reinmax": {}, "st": {"model_options": {"variables": 0}}})
    study = load_study(path, tmp_path / "runs")
    assert run_study(study, jobs=2) == 1
    progress = capsys.readouterr().out
    assert "started reinmax/seed0 (log:" in progress
    assert "st/seed0 failed after" in progress and "(train.py: error:" in progress
    done, failed = (cell_state(study, cell) for cell in study.cells)
    assert done.status == "finished" and failed.status == "failed" and "variables >= 1" in failed.line
    assert "summary: finished at step 40" in (study.run_folder(study.cells[0]) / "cell.log").read_text()


def test_a_study_submitted_to_slurm_runs_each_cell_as_an_array_task(tmp_path, capsys):
    """Stand-ins for sbatch and srun: sbatch runs every task of the array, one after another, as SLURM would."""
    bin_folder = tmp_path / "bin"
    bin_folder.mkdir()
    (bin_folder / "sbatch").write_text(
        "#!/bin/bash\n"
        'echo "$@" > "$(dirname "$0")/sbatch-arguments"\n'
        'script="${@: -1}"\n'
        "last=$(sed -n 's/^#SBATCH --array=0-\\([0-9]*\\).*/\\1/p' \"$script\")\n"
        "for task in $(seq 0 \"$last\"); do\n"
        "  SLURM_JOB_ID=7$task SLURM_ARRAY_JOB_ID=7 SLURM_ARRAY_TASK_ID=$task bash \"$script\" \\\n"
        "    > \"$(dirname \"$script\")/7_$task.out\" 2>&1 || exit 1\n"
        "done\n"
        "echo 7\n")
    (bin_folder / "srun").write_text('#!/bin/bash\nexec "$@"\n')
    for tool in ("sbatch", "srun"):
        (bin_folder / tool).chmod(stat.S_IRWXU)
    path = write_study(tmp_path, estimators=["reinmax"])
    arguments = ["submit", str(path), "--output-dir", str(tmp_path / "runs"), "--sbatch-arg=--gres=gpu:1"]

    assert study_main([*arguments, "--dry-run"]) == 0
    script = capsys.readouterr().out
    for line in ("#SBATCH --array=0-0", "#SBATCH --requeue", "#SBATCH --signal=SIGUSR1@90", "#SBATCH --gres=gpu:1",
                 "cells=(reinmax/seed0)", f"exec srun {sys.executable} -m zoo.study cell"):
        assert line in script

    os.environ["PATH"] = f"{bin_folder}{os.pathsep}{os.environ['PATH']}"
    try:
        assert study_main(arguments) == 0
    finally:
        os.environ["PATH"] = os.environ["PATH"].split(os.pathsep, 1)[1]
    assert "submitted job array 7, 1 tasks" in capsys.readouterr().out
    assert "--parsable" in (bin_folder / "sbatch-arguments").read_text()
    study = load_study(path, tmp_path / "runs")
    assert cell_state(study, study.cells[0]).status == "finished"
    assert "summary: finished at step 40" in (tmp_path / "runs" / "slurm" / "7_0.out").read_text()
    assert study_main(["submit", str(path), "--output-dir", str(tmp_path / "runs")]) == 0
    assert "nothing to submit" in capsys.readouterr().out


@pytest.mark.parametrize("content, message", [
    ({"estimators": ["reinmax"], "seed": [1]}, "unknown key(s) seed"),
    ({}, "'estimators' is missing"),
    ({"estimators": ["switch"]}, "takes a pathwise or score-function estimator; 'switch' is not one"),
    ({"estimators": ["reinmax"], "grid": {"seed": [0, 1]}}, "'seed' cannot vary in a grid"),
    ({"estimators": ["reinmax"], "grid": {"tau": 1.0}}, "'tau' needs a non-empty list of values"),
    ({"estimators": ["reinmax"], "grid": {"model_options.variables": [2], "widht": [1]}}, "'widht' is not a setting"),
    ({"estimators": {"reinmax": {"lr_typo": 1}}}, "unknown setting(s) lr_typo"),
    ({"estimators": {"reinmax": {"devices": 2}}}, "devices: each cell runs on one device; run cells side by side"),
    ({"estimators": ["reinmax"], "seeds": 3}, "seeds must be a list of seeds"),
    ({"estimators": ["reinmax"], "target": {"metric": "train/loss", "value": 0.2}}, "say whether train/loss is "
                                                                                     "better low or high"),
    ({"estimators": ["reinmax"], "table": {"columns": "pnorm"}}, "columns must be 'estimator' or a grid key"),
    ({"estimators": ["reinmax"], "grid": {"lr": [0.1, -1.0]}}, "cell reinmax/lr-1.0-seed0: setting lr"),
    ({"estimators": ["reinmax"], "curve_every": 0}, "curve_every must be a positive number of steps"),
])
def test_a_study_file_with_a_mistake_is_refused_naming_it(tmp_path, content, message):
    with pytest.raises(StudyError, match=None) as error:
        load_study(write_study(tmp_path, **content))
    assert message in str(error.value)


def test_a_model_without_replicas_refuses_them(tmp_path):
    (tmp_path / "study.yaml").write_text("model: vae\nestimators: [reinmax]\nreplicas: 2\n")
    with pytest.raises(StudyError, match="model 'vae' trains one seed a run; give 'seeds' instead"):
        load_study(tmp_path / "study.yaml")


def test_the_report_replaces_its_own_section_of_a_results_file_and_nothing_else(tmp_path):
    results = tmp_path / "RESULTS.md"
    results.write_text("# Results\n\nintro\n")
    replace_section(results, "a", "## A\n\nfirst\n")
    replace_section(results, "b", "## B\n")
    replace_section(results, "a", "## A\n\nsecond\n")
    assert results.read_text() == ("# Results\n\nintro\n\n<!-- study a -->\n## A\n\nsecond\n<!-- end study a -->\n\n"
                                   "<!-- study b -->\n## B\n<!-- end study b -->\n")


def test_a_cell_with_a_fresh_heartbeat_is_running_and_with_a_stale_one_interrupted(tmp_path):
    study = load_study(write_study(tmp_path, estimators=["reinmax"]), tmp_path / "runs")
    cell = study.cells[0]
    assert cell_state(study, cell).status == "pending"
    heartbeat = study.run_folder(cell) / "heartbeat"
    heartbeat.parent.mkdir(parents=True)
    heartbeat.touch()
    assert cell_state(study, cell).status == "running"
    stale = heartbeat.stat().st_mtime + HEARTBEAT_TIMEOUT + 1  # killed: no more beats
    assert cell_state(study, cell, now=stale).status == "interrupted"


def test_cells_side_by_side_share_the_cores_and_take_a_gpu_each():
    assert cell_environment(slot=1, jobs=2, gpus=0, cores=16) == {"OMP_NUM_THREADS": "8"}
    assert cell_environment(slot=5, jobs=8, gpus=4, cores=2) == {"OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "1"}


def test_the_readmes_study_and_every_benchmark_study_are_valid(tmp_path):
    readme = (ROOT / "README.md").read_text().split("## Comparing estimators")[1]
    (tmp_path / "readme.yaml").write_text(readme.split("```yaml\n")[1].split("```")[0])
    studies = [tmp_path / "readme.yaml", *sorted((ROOT / "benchmarks" / "studies").glob("*.yaml"))]
    assert len(studies) >= 6
    for path in studies:
        assert load_study(path, tmp_path / "runs").cells, path


def test_a_fine_tuning_study_names_its_folders_by_the_releases_data(tmp_path):
    (tmp_path / "study.yaml").write_text("model: vae\nsettings: {from_pretrained: vae-fashion-mnist-reinmax}\n"
                                         "estimators: {st: {tau: 1.0}}\n")
    study = load_study(tmp_path / "study.yaml", tmp_path / "runs")
    assert study.run_folder(study.cells[0]) == tmp_path / "runs" / "vae-fashion-mnist-st" / "seed0"
