"""The model registry: a new model is one file, and train.py, --help, releases and evaluation pick it up."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from lightning import LightningModule
from torch import nn

import zoo
from datamodules.families import FAMILIES as DATA_FAMILIES
from zoo import train
from zoo.estimators import FAMILIES as ESTIMATOR_FAMILIES
from zoo.estimators import list_estimators
from zoo.evaluate import measure
from zoo.models import Recipe, _registry, build_estimator, list_models, model_card, register_model
from zoo.pretrained import get_release
from zoo.release import release


@pytest.fixture
def registry(monkeypatch):
    """The model registry, restored after the test."""
    monkeypatch.setattr(_registry, "_REGISTRY", dict(_registry._REGISTRY))


def register_tiny_model() -> type[LightningModule]:
    """What a model file holds: a LightningModule with one discrete code, registered with its contract."""

    @register_model("tiny", summary="a one-layer binary autoencoder", data_family="images", metric="loss",
                    mode="min", estimator_families=("pathwise",), recipe=Recipe(data="mnist", max_steps=2))
    class TinyAutoencoder(LightningModule):
        def __init__(self, bits: int = 4, estimator: str = "st", tau: float = 1.0,
                     estimator_options: dict | None = None, lr: float = 1e-2) -> None:
            super().__init__()
            self.save_hyperparameters()
            self.estimator = build_estimator(self.card, estimator, tau, estimator_options)
            self.encoder, self.decoder = nn.Linear(784, 2 * bits), nn.Linear(2 * bits, 784)

        def loss(self, images: torch.Tensor) -> torch.Tensor:
            code, _ = self.estimator(self.encoder(images).unflatten(-1, (-1, 2)))
            return F.binary_cross_entropy_with_logits(self.decoder(code.flatten(1)), images)

        def training_step(self, images: torch.Tensor, index: int) -> torch.Tensor:
            return self.loss(images)

        def validation_step(self, images: torch.Tensor, index: int) -> None:
            self.log("val/loss", self.loss(images))

        def test_step(self, images: torch.Tensor, index: int) -> None:
            self.log("test/loss", self.loss(images))

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)

    return TinyAutoencoder


def test_a_registered_model_trains_through_train_py_and_is_released_and_evaluated(registry, tiny_mnist, tmp_path,
                                                                                   capsys, monkeypatch):
    model_class = register_tiny_model()
    assert "tiny" in list_models() and model_card("tiny").model_class is model_class
    assert model_card("tiny").monitor == "val/loss" and model_card("tiny").test_metric == "test/loss"

    with pytest.raises(SystemExit):
        train.main(["--help"])
    assert "tiny      a one-layer binary autoencoder; data: mnist, fashion-mnist, omniglot" in capsys.readouterr().out

    command = ["--model", "tiny", "--estimator", "reinmax", "--tau", "1.5", "--data-dir", str(tiny_mnist),
               "--output-dir", str(tmp_path / "runs"), "--accelerator", "cpu", "--devices", "1",
               "--trainer-arg", "enable_progress_bar=false"]
    assert train.main(command) == 0  # the recipe's data (mnist) and budget (2 steps)
    run = tmp_path / "runs" / "tiny-mnist-reinmax" / "version_0"
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2

    manifest = tmp_path / "checkpoints" / "manifest.json"
    manifest.parent.mkdir()
    entry = release(run, "tiny-mnist-reinmax", tolerance=1e-3, manifest=manifest, data_dir=str(tiny_mnist))
    assert entry["model"] == "tiny" and entry["estimator"] == "reinmax" and entry["tau"] == 1.5
    loaded = zoo.load_pretrained("tiny-mnist-reinmax", manifest=manifest)
    assert isinstance(loaded, model_class) and loaded.estimator.tau == 1.5
    measured = measure(get_release("tiny-mnist-reinmax", manifest=manifest), loaded, str(tiny_mnist))
    assert measured["test/loss"] == pytest.approx(entry["metrics"]["test/loss"]["value"], abs=1e-3)


def test_a_registered_model_passes_every_registry_wide_check(registry, tmp_path):
    """What the parametrised tests check of every model, through this one test's model: resumes, two processes,
    mixed precision and the host-read budget need nothing of a new model beyond its file."""
    from tests.runs import small_run
    from tests.test_distributed import check_two_processes
    from tests.test_host_reads import BATCHES, check_host_reads
    from tests.test_mixed_precision import check_mixed_precision
    from tests.test_resume import EXAMPLES, check_every_kind_of_checkpoint_resumes

    register_tiny_model()
    data = tmp_path / "data"
    check_every_kind_of_checkpoint_resumes(small_run("tiny", data, EXAMPLES), tmp_path / "resume", validates=True)
    check_host_reads("tiny", small_run("tiny", data, 4 * BATCHES + 20), tmp_path / "host-reads")
    for precision in ("bf16-mixed", "16-mixed"):
        check_mixed_precision(small_run("tiny", data, batch_size=8), precision, tmp_path / precision)
    check_two_processes(small_run("tiny", data, batch_size=4), tmp_path / "two-processes",
                        program=("tests/registered_train.py", f"{__name__}:register_tiny_model"))


def test_a_model_refuses_an_estimator_of_another_family_by_name(registry):
    model_class = register_tiny_model()
    with pytest.raises(ValueError) as refusal:
        model_class(estimator="reinforce")
    assert str(refusal.value) == ("model 'tiny' takes a pathwise estimator; 'reinforce' is not one. "
                                  f"Valid estimators: {', '.join(list_estimators('pathwise'))}.")


def test_a_contract_with_unknown_names_is_refused_when_registered(registry):
    blank = type("Blank", (LightningModule,), {})
    with pytest.raises(ValueError, match=f"model 'bad': unknown data family 'pictures'; valid families: "
                                         f"{', '.join(DATA_FAMILIES)}"):
        register_model("bad", summary="", data_family="pictures", metric="loss", mode="min",
                       recipe=Recipe(data="mnist"))(blank)
    with pytest.raises(ValueError, match=f"unknown estimator families sampling; valid families: "
                                         f"{', '.join(ESTIMATOR_FAMILIES)}"):
        register_model("bad", summary="", data_family="images", metric="loss", mode="min",
                       estimator_families=("sampling",), recipe=Recipe(data="mnist"))(blank)
    with pytest.raises(ValueError, match="model 'bad': the 'images' data family does not provide in_channels; it "
                                         "provides none"):
        register_model("bad", summary="", data_family="images", metric="loss", mode="min",
                       recipe=Recipe(data="mnist"), from_data=("in_channels",))(blank)
    with pytest.raises(ValueError, match="a model named 'vae' is already registered"):
        register_model("vae", summary="", data_family="images", metric="loss", mode="min",
                       recipe=Recipe(data="mnist"))(blank)


@pytest.mark.parametrize("name", list_models())
def test_every_card_is_consistent_with_its_model(name):
    card = model_card(name)
    assert card.model_class.card is card and card.name == name and card.summary
    from datamodules.families import valid_data

    assert card.recipe.data in valid_data(card.data_family)
    assert (card.recipe.max_epochs > 0) != (card.recipe.max_steps > 0)  # one budget
