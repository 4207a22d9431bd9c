"""Architecture search and retraining through train.py: a search, its bad input, and DDP's samples per rank."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

from zoo import train as train_py
from zoo.models.nats import Genotype

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--data", "synthetic", "--accelerator", "cpu", "--model-arg", "channels=2", "--model-arg", "cells_per_stage=1",
        "--trainer-arg", "enable_progress_bar=false"]
GENOTYPE = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"


def train(*arguments: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python train.py ARGUMENTS`` as a process of its own: the search's retraining hint is Lightning's log."""
    return subprocess.run([sys.executable, "train.py", *arguments], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def train_here(*arguments: str) -> None:
    """train.py in this process, for the runs whose output the tests do not read."""
    assert train_py.main(list(arguments)) == 0


@pytest.fixture(scope="module")
def search(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """A two-epoch search's run folder and its output."""
    output = tmp_path_factory.mktemp("runs")
    result = train("--model", "gdas", "--estimator", "stgs", *TINY, "--devices", "1", "--max-epochs", "2",
                   "--trainer-arg", "limit_train_batches=3", "--trainer-arg", "limit_val_batches=1",
                   "--output-dir", str(output))
    assert result.returncode == 0, result.stderr
    return output / "gdas-synthetic-stgs" / "version_0", result


def found_genotype(run: Path) -> str:
    """The argmax genotype of a search run's last checkpoint."""
    alpha = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]["alpha"]
    return str(Genotype.from_alpha(alpha))


def test_a_search_runs_logs_its_genotype_and_alpha_and_checkpoints_alpha(search):
    run, result = search
    assert (f"train it from scratch with: python train.py --model nas-net --genotype '{found_genotype(run)}' "
            "--data synthetic --model-arg channels=2 --model-arg cells_per_stage=1") in result.stderr
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["tau"] == 10.0 and config["batch_size"] == 64
    saved = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["state_dict"]["alpha"].shape == (6, 5)
    assert saved["hyper_parameters"]["in_channels"] == 3 and saved["hyper_parameters"]["num_classes"] == 10
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run), size_guidance={"images": 0, "tensors": 0}).Reload()
    assert events.Tags()["images"] == ["search/alpha_softmax"]
    genotype_text = events.Tensors("search/genotype/text_summary")
    assert len(genotype_text) == 2  # one per epoch
    Genotype.parse(genotype_text[-1].tensor_proto.string_val[0].decode().strip("`"))


def test_a_genotype_retrains_through_train_py(tmp_path):
    train_here("--model", "nas-net", "--genotype", GENOTYPE, *TINY, "--devices", "1", "--max-steps", "2",
               "--trainer-arg", "limit_val_batches=1", "--output-dir", str(tmp_path))
    saved = torch.load(tmp_path / "nas-net-synthetic" / "version_0" / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["hyper_parameters"]["genotype"] == GENOTYPE and saved["global_step"] == 2


def test_a_retrained_genotype_is_released_with_the_search_that_found_it(search, tmp_path, capsys):
    from zoo.release import main as release_main
    from zoo.release import release

    run, _ = search
    found = found_genotype(run)
    manifest = tmp_path / "checkpoints" / "manifest.json"
    manifest.parent.mkdir()
    for genotype in (found, GENOTYPE if found != GENOTYPE else GENOTYPE.replace("skip_connect~0", "none~0")):
        train_here("--model", "nas-net", "--genotype", genotype, *TINY, "--devices", "1", "--max-steps", "1",
                   "--trainer-arg", "limit_val_batches=1", "--output-dir", str(tmp_path / "runs"))
    retrained, other = (tmp_path / "runs" / "nas-net-synthetic" / f"version_{i}" for i in (0, 1))

    entry = release(retrained, "tiny-nas-net", tolerance=1.0, manifest=manifest, found_by=run)
    assert entry["found_by"] == {"model": "gdas", "estimator": "stgs", "tau": [10.0, 0.1], "genotype": found,
                                 "command": yaml.safe_load((run / "config.yaml").read_text())["command"]}
    assert entry["found_by"]["command"].startswith("python train.py --model gdas --estimator stgs")
    with pytest.raises(ValueError, match=f"found {re.escape(found)}, not the released genotype"):
        release(other, "tiny-nas-net-2", tolerance=1.0, manifest=manifest, found_by=run)
    with pytest.raises(ValueError, match="--found-by must be a gdas search run"):
        release(retrained, "tiny-nas-net-3", tolerance=1.0, manifest=manifest, found_by=retrained)
    with pytest.raises(SystemExit) as stopped:  # the command line says the same, without a traceback
        release_main([str(retrained), "--name", "tiny-nas-net-3", "--tolerance", "1", "--manifest", str(manifest),
                      "--found-by", str(retrained)])
    assert stopped.value.code == 2 and "--found-by must be a gdas search run" in capsys.readouterr().err
    assert sorted(path.name for path in manifest.parent.iterdir()) == ["manifest.json", "tiny-nas-net.safetensors"]


def test_the_searched_supernet_is_released_with_its_alpha_figure_and_starts_a_new_search(search, tmp_path,
                                                                                         monkeypatch):
    import lightning as L

    from zoo import load_pretrained
    from zoo.pretrained import markdown_table
    from zoo.release import release

    run, _ = search
    manifest = tmp_path / "checkpoints" / "manifest.json"
    manifest.parent.mkdir()
    entry = release(run, "tiny-gdas", tolerance=1.0, manifest=manifest, figures=tmp_path / "figures")
    assert entry["figure"] == "figures/tiny-gdas.png"
    assert entry["tau_schedule"] == [10.0, 0.1]  # STGS's: τ falls 10 → 0.1 over the search
    assert "| `tiny-gdas` | gdas | synthetic | stgs (10→0.1) |" in markdown_table(manifest)
    assert (tmp_path / "figures" / "tiny-gdas.png").read_bytes()[:4] == b"\x89PNG"
    searched = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]["alpha"]
    supernet = load_pretrained("tiny-gdas", manifest=manifest)
    torch.testing.assert_close(supernet.alpha.detach(), searched, rtol=1e-3, atol=1e-3)  # stored in float16

    class StartingAlpha(L.Callback):
        def on_train_start(self, trainer, module) -> None:
            self.alpha = module.alpha.detach().clone()

    start = StartingAlpha()
    monkeypatch.setattr("zoo.pretrained.MANIFEST", manifest)
    assert train_py.main(["--from-pretrained", "tiny-gdas", "--accelerator", "cpu", "--devices", "1",
                          "--max-steps", "2", "--trainer-arg", "limit_val_batches=1",
                          "--trainer-arg", "enable_progress_bar=false", "--output-dir", str(tmp_path / "runs")],
                         callbacks=[start]) == 0
    torch.testing.assert_close(start.alpha, supernet.alpha.detach())


@pytest.mark.parametrize("arguments, message", [
    (["--model", "nas-net", "--genotype", GENOTYPE.replace("skip_connect", "skip")],
     "unknown operation(s) 'skip'; valid operations: none, skip_connect, nor_conv_1x1, nor_conv_3x3, avg_pool_3x3"),
    (["--model", "nas-net", "--genotype", "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|"],
     "has 2 node(s) separated by '+', not 3"),
    (["--model", "nas-net"], "model 'nas-net' needs --genotype"),
    (["--model", "nas-net", "--genotype", GENOTYPE, "--estimator", "st"], "takes no estimator"),
    (["--model", "gdas", "--estimator", "reinmax", "--tau-end", "0.5"],
     "reinmax: temperature tau=0.5 is out of range; it must be finite and >= 1.0"),
    (["--model", "gdas", "--tau-schedule", "linear", "--tau-end", "1", "--tau-duration", "5"],
     "anneals tau itself, linearly over the epochs from --tau to --tau-end; drop --tau-schedule"),
    (["--model", "gdas", "--data", "imagenet16"], "valid choices: cifar10, cifar100, imagenet16-120, fashion-mnist"),
])
def test_bad_search_and_retraining_input_is_refused_with_its_fix(arguments, message, tmp_path, capsys, monkeypatch):
    with pytest.raises(SystemExit) as stopped:
        train_py.main([*TINY, *arguments, "--max-steps", "1", "--output-dir", str(tmp_path)])
    assert stopped.value.code == 2
    assert message in capsys.readouterr().err


DDP_SCRIPT = textwrap.dedent('''
    """Two CPU processes of train.py's gdas run; each rank writes the architectures it sampled in training."""
    import sys
    from pathlib import Path

    import torch

    sys.path.insert(0, sys.argv[1])
    from zoo import runs, train
    from zoo import build

    output = Path(sys.argv[2])
    config = train.parse_settings([
        "--model", "gdas", "--data", "synthetic", "--accelerator", "cpu", "--devices", "2", "--strategy", "ddp",
        "--model-arg", "channels=2", "--model-arg", "cells_per_stage=1", "--batch-size", "16",
        "--max-steps", "8", "--trainer-arg", "limit_val_batches=1", "--trainer-arg", "enable_progress_bar=false",
        "--output-dir", str(output)])
    run, _ = runs.run_directory(config)
    model = build.build_model(config)
    drawn = []
    sample = model.sample

    def recording_sample():
        weights, chosen = sample()
        if model.training:
            drawn.append(chosen)
        return weights, chosen

    model.sample = recording_sample
    trainer = build.build_trainer(config, run, model)
    trainer.fit(model, datamodule=build.build_datamodule(config))
    torch.save({"drawn": drawn, "alpha": model.alpha.detach(), "stem": model.network.stem[0].weight.detach()},
               output / f"rank{trainer.global_rank}.pt")
''')


def test_two_process_ddp_draws_different_architectures_per_rank_and_keeps_the_parameters_equal(tmp_path):
    script = tmp_path / "ddp_search.py"
    script.write_text(DDP_SCRIPT)
    result = subprocess.run([sys.executable, str(script), str(ROOT), str(tmp_path)], cwd=tmp_path,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    ranks = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in (0, 1)]
    assert len(ranks[0]["drawn"]) == len(ranks[1]["drawn"]) == 8  # 4 steps, two samples each
    assert ranks[0]["drawn"] != ranks[1]["drawn"]
    # The gradients are averaged over the ranks, so both hold the same α and weights after every step.
    assert torch.equal(ranks[0]["alpha"], ranks[1]["alpha"])
    assert torch.equal(ranks[0]["stem"], ranks[1]["stem"])
