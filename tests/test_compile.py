"""``--compile``: every model trains compiled, compiles nothing after its first epoch, and resumes exactly.

The suite's runs use the ``eager`` backend: torch.compile captures the same graphs,
with the same guards, as for inductor, so what would recompile recompiles there too,
at a fraction of inductor's compile time. The slow set runs every model, mixed
precision and two processes through inductor itself.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from torch._dynamo.utils import counters

from callbacks.compiling import CompiledTraining, compile_optimizer_step
from tests.runs import small_run
from tests.test_distributed import check_two_processes
from tests.test_mixed_precision import check_mixed_precision
from tests.test_resume import EXAMPLES, SHORT_EPOCHS, KeepCheckpoints, assert_same_training_state, run
from zoo import build, train
from zoo.models import list_models, make_optimizer
from zoo.runs import RUN_VERSION_VARIABLE
from zoo.settings import resolve_values

TWO_EPOCHS = ["--max-epochs", "2", "--max-steps", "-1"]
#: Batches of 5 of the 32 examples: each epoch ends with a short batch of 2.
SHORT_LAST_BATCH = ["--batch-size", "5"]


def compiled_graphs() -> int:
    return counters["stats"]["unique_graphs"]


class CountGraphs(L.Callback):
    """The graphs compiled so far at the end of each training epoch (after its validation)."""

    def __init__(self) -> None:
        self.at_epoch_end: list[int] = []

    def on_train_epoch_end(self, trainer, module) -> None:
        self.at_epoch_end.append(compiled_graphs())


@pytest.fixture(autouse=True)
def fresh_compiler(monkeypatch):
    """Each test starts with no compiled graph and no count, and with no run version handed on."""
    torch._dynamo.reset()
    counters.clear()
    monkeypatch.delenv(RUN_VERSION_VARIABLE, raising=False)
    yield
    torch._dynamo.reset()


def check_compiled_training(arguments: list[str], tmp_path: Path, capsys, backend: str,
                            resume: bool = True) -> CountGraphs:
    """Two short epochs compiled: nothing compiled after the first; a resume from mid-epoch ends the same."""
    arguments = [*arguments, *SHORT_EPOCHS, *SHORT_LAST_BATCH, "--compile", backend]
    keep, count = KeepCheckpoints(tmp_path), CountGraphs()
    expected = run(arguments, tmp_path / "whole", *TWO_EPOCHS, callbacks=[keep, count])
    assert count.at_epoch_end[0] == count.at_epoch_end[-1], "recompiled after the first epoch"
    printed = capsys.readouterr().out
    assert printed.count("compiled in ") == (1 if count.at_epoch_end[0] else 0)
    if not resume:
        return count
    resumed = run(arguments, tmp_path / "resumed", *TWO_EPOCHS, "--resume", str(keep.kept["periodic"]))
    assert_same_training_state(resumed, expected)
    return count


#: The models that compile part of their step: GDAS leaves its network eager (its test below says why).
COMPILING = [model for model in list_models() if model != "gdas"]


@pytest.mark.parametrize("model", COMPILING)
def test_every_model_trains_compiled_compiles_nothing_after_its_first_epoch_and_resumes_exactly(
        model, tmp_path, capsys):
    count = check_compiled_training(small_run(model, tmp_path, EXAMPLES), tmp_path, capsys, "eager")
    assert count.at_epoch_end[0] > 0


@pytest.mark.slow
@pytest.mark.parametrize("model", COMPILING)
def test_every_model_trains_compiled_by_inductor_resumes_exactly_and_leaves_home_alone(
        model, tmp_path, capsys, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    check_compiled_training(small_run(model, tmp_path, EXAMPLES), tmp_path, capsys, "inductor")
    assert not any(home.iterdir())


@pytest.mark.parametrize("precision, backend", [("16-mixed", "eager"),
                                                pytest.param("bf16-mixed", "inductor", marks=pytest.mark.slow),
                                                pytest.param("16-mixed", "inductor", marks=pytest.mark.slow)])
def test_the_vae_trains_compiled_in_mixed_precision(precision, backend, tmp_path):
    """Autocast inside the compiled loss; under 16-mixed (float16, the GPU's path) the loss scaler unscales before
    the compiled update."""
    check_mixed_precision([*small_run("vae", tmp_path, EXAMPLES), "--compile", backend], precision, tmp_path)


@pytest.mark.slow
def test_a_compiled_run_trains_on_two_processes(tmp_path):
    check_two_processes([*small_run("vae", tmp_path, EXAMPLES), "--compile"], tmp_path)


def test_gdas_says_why_its_network_stays_eager(tmp_path, capsys):
    run([*small_run("gdas", tmp_path, EXAMPLES), *SHORT_EPOCHS, "--max-steps", "1", "--compile"], tmp_path / "runs")
    printed = capsys.readouterr().out
    assert "--compile: gdas: the network stays eager. Each cell runs the operations the sample chose" in printed
    assert "compiled in" not in printed and compiled_graphs() == 0


def test_a_temperature_schedule_and_the_gradient_probe_do_not_recompile_every_step(tmp_path, capsys):
    """τ changes at each of the 14 steps; its first change makes it a symbol of the graph, once. The gradient
    probe, every 4 steps, runs the model's eager functions.

    (A schedule that ends at τ = 1 compiles once more there: ReinMax's rule has a case of its own at 1.)"""
    arguments = [*small_run("vae", tmp_path, EXAMPLES), "--tau", "2", "--tau-schedule", "linear", "--tau-end",
                 "1.5", "--tau-duration", "14", "--grad-quality-every", "4"]
    check_compiled_training(arguments, tmp_path, capsys, "eager", resume=False)


def test_a_changing_learning_rate_compiles_the_update_once_more_not_every_step():
    parameter = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.RAdam([parameter], lr=0.1)
    compile_optimizer_step(optimizer, "eager")
    for step in range(6):
        optimizer.param_groups[0]["lr"] = 0.1 / (step + 1)
        assert optimizer.step(lambda: parameter.square().sum().backward()) is None
    assert compiled_graphs() <= 2
    assert int(optimizer.state[parameter]["step"]) == 6


def test_checkpoints_move_between_compiled_and_eager_runs(tmp_path, capsys):
    """An eager run's checkpoint continues compiled, and a compiled run's eagerly, to the uninterrupted run's
    weights up to rounding: a compiled step computes softmax with another formulation (``_categorical``)."""
    arguments = [*small_run("vae", tmp_path, EXAMPLES), *SHORT_EPOCHS]
    keep = KeepCheckpoints(tmp_path)
    eager = run(arguments, tmp_path / "eager", *TWO_EPOCHS, callbacks=[keep])
    compiled = run(arguments, tmp_path / "compiled", "--max-epochs", "1", "--max-steps", "-1", "--compile", "eager",
                   "--resume", str(keep.kept["periodic"]))
    assert capsys.readouterr().out.count("compiled in ") == 1
    (compiled_checkpoint,) = (tmp_path / "compiled").glob("*/*/checkpoints/last.ckpt")
    assert compiled["global_step"] < eager["global_step"]
    # --resume PATH continues the run in its own folder.
    continued = run(arguments, tmp_path / "compiled", *TWO_EPOCHS, "--resume", str(compiled_checkpoint))
    assert continued["global_step"] == eager["global_step"]
    for saved in ("state_dict", "optimizer_states"):
        torch.testing.assert_close(continued[saved], eager[saved], rtol=1e-3, atol=1e-5)


def test_without_a_cpp_compiler_a_run_trains_uncompiled_and_says_so_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "no-compilers-here"))
    arguments = [*small_run("poly", tmp_path, EXAMPLES), *SHORT_EPOCHS, "--max-steps", "3", "--compile"]
    run(arguments, tmp_path / "runs")
    lines = [line for line in capsys.readouterr().out.splitlines()
             if line.startswith("--compile") or line.startswith("compiled in")]
    assert lines == ["--compile: no C++ compiler (g++) is installed, which inductor needs on a CPU; training "
                     "uncompiled. Install one (e.g. apt-get install g++) or pass --compile aot_eager."]
    assert compiled_graphs() == 0


@pytest.mark.parametrize("given, resolved", [(["--compile"], "inductor"), (["--compile", "aot_eager"], "aot_eager"),
                                             ([], None)])
def test_the_compile_flag_alone_means_inductor(given, resolved):
    assert train.parse_settings(["--model", "poly", *given]).compile == resolved


@pytest.mark.parametrize("value, resolved", [(True, "inductor"), (False, None), ("eager", "eager")])
def test_compile_in_a_config_file_is_true_false_or_a_backend(value, resolved):
    assert resolve_values({"model": "poly", "compile": value}).compile == resolved


def test_a_compiled_run_gives_the_model_its_compiled_parts_once(tmp_path):
    """A second fit of the same module (a notebook's) keeps the parts the first compiled."""
    settings = train.parse_settings(small_run("poly", tmp_path, EXAMPLES))
    model = build.build_model(settings)
    objective = model.objective
    for steps in (2, 4):
        trainer = L.Trainer(max_steps=steps, logger=False, enable_progress_bar=False, enable_checkpointing=False,
                            enable_model_summary=False, callbacks=[CompiledTraining("eager")])
        trainer.fit(model, build.build_datamodule(settings))
    assert model.objective is not objective and model._parts_compiled == 1
    assert compiled_graphs() == 1


@pytest.mark.parametrize("name, options", [("adam", {}), ("adamw", {"weight_decay": 0.05}),
                                           ("sgd", {"momentum": 0.9, "nesterov": True, "weight_decay": 5e-4})])
def test_a_fused_optimizer_updates_as_the_unfused_one_and_stays_fused_loading_its_state(name, options):
    """The same update up to rounding; and an unfused optimizer's state (a checkpoint from before the zoo fused its
    updates) loaded into a fused one leaves it fused, so that it steps under a loss scaler."""
    generator = torch.Generator().manual_seed(0)
    fused_parameter, unfused_parameter = (torch.nn.Parameter(torch.ones(50)) for _ in range(2))
    fused = make_optimizer(name, [fused_parameter], 0.01, **options)
    unfused = make_optimizer(name, [unfused_parameter], 0.01, fused=False, **options)
    assert fused.param_groups[0]["fused"] and not unfused.param_groups[0]["fused"]
    for _ in range(5):
        fused_parameter.grad = torch.randn(50, generator=generator)
        unfused_parameter.grad = fused_parameter.grad.clone()
        fused.step()
        unfused.step()
    torch.testing.assert_close(fused_parameter, unfused_parameter, rtol=1e-6, atol=1e-7)

    fused.load_state_dict(unfused.state_dict())
    assert fused.param_groups[0]["fused"]
    scaler = torch.amp.GradScaler("cpu")
    scaler.scale(fused_parameter.square().sum()).backward()
    scaler.unscale_(fused)
    scaler.step(fused)
    assert torch.isfinite(fused_parameter).all()
