"""Released weights: a release made from a run, loading, hash and tamper checks, and fine-tuning from one."""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch

import zoo
from zoo import train
from zoo.evaluate import FIRST_BATCHES
from zoo.pretrained import PretrainedError, get_release, list_pretrained, load_pretrained, markdown_table, read_manifest
from zoo.release import release

ROOT = Path(__file__).resolve().parents[1]
NAME = "vae-mnist-st-tiny"
SMALL_VAE = ["--latents", "3", "--categories", "4", "--model-arg", "hidden_sizes=[16, 8]"]


@pytest.fixture(scope="module")
def data_dir(tiny_mnist) -> Path:
    return tiny_mnist


@pytest.fixture(scope="module")
def run(data_dir, tmp_path_factory) -> Path:
    """A tiny train.py run of the categorical VAE."""
    output = tmp_path_factory.mktemp("runs")
    command = ["--data", "mnist", "--data-dir", str(data_dir), "--estimator", "st", "--tau", "1.0", "--max-steps",
               "3", "--batch-size", "20", "--output-dir", str(output), "--accelerator", "cpu", "--devices", "1",
               "--trainer-arg", "enable_progress_bar=false", *SMALL_VAE]
    assert train.main(command) == 0
    return output / "vae-mnist-st" / "version_0"


@pytest.fixture(scope="module")
def released(run, data_dir, tmp_path_factory) -> Path:
    """A manifest with one release, made by train.py and zoo.release as a maintainer makes one."""
    manifest = tmp_path_factory.mktemp("checkpoints") / "manifest.json"
    release(run, NAME, tolerance=1e-3, manifest=manifest, data_dir=str(data_dir))
    return manifest


def copy_of(manifest: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "checkpoints"
    shutil.copytree(manifest.parent, folder)
    return folder / "manifest.json"


def test_a_release_records_what_a_user_needs_and_loads_in_eval_mode(released, data_dir):
    entry = json.loads(released.read_text())["releases"][NAME]
    assert entry["model"] == "vae" and entry["estimator"] == "st" and entry["tau"] == 1.0
    assert entry["command"].startswith("python train.py --data mnist") and "--max-steps 3" in entry["command"]
    assert entry["dtype"] == "float16" and entry["trained_steps"] == 3
    assert entry["sha256"] == hashlib.sha256((released.parent / entry["file"]).read_bytes()).hexdigest()
    model = load_pretrained(NAME, manifest=released)
    assert not model.training and model.hparams.latents == 3
    assert entry["parameters"] == sum(p.numel() for p in model.parameters())
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_the_recorded_metric_re_measures_from_the_stored_half_precision_weights(released, data_dir):
    from zoo.evaluate import measure

    release_ = get_release(NAME, released)
    measured = measure(release_, load_pretrained(NAME, manifest=released), data_dir=str(data_dir))
    metric, recorded = next(iter(release_.metrics.items()))
    assert metric == "test/neg_elbo_epoch"
    assert abs(measured[metric] - recorded["value"]) <= recorded["tolerance"]
    first = measure(release_, load_pretrained(NAME, manifest=released), str(data_dir), batches=FIRST_BATCHES)
    assert recorded["first_batches"] == {"batches": FIRST_BATCHES, "value": round(first[metric], 6)}


def test_a_failed_release_leaves_the_earlier_one_intact(run, released, tmp_path, monkeypatch):
    import zoo.release

    manifest = copy_of(released, tmp_path)
    before = {path.name: path.read_bytes() for path in manifest.parent.iterdir()}

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(zoo.release, "measure", interrupted)  # e.g. stopped while measuring
    with pytest.raises(KeyboardInterrupt):
        release(run, NAME, tolerance=1e-3, dtype="float32", manifest=manifest)  # other bytes than the release's
    monkeypatch.undo()
    with pytest.raises(ValueError, match="--found-by is for nas-net runs; .* trained 'vae'"):
        release(run, NAME, tolerance=1e-3, manifest=manifest, found_by=run)
    assert {path.name: path.read_bytes() for path in manifest.parent.iterdir()} == before
    load_pretrained(NAME, manifest=manifest)


def test_list_pretrained_filters_by_pattern(released):
    assert list_pretrained("vae-*", manifest=released) == [NAME]
    assert list_pretrained("bvae-*", manifest=released) == []


def test_an_unknown_name_lists_close_matches(released):
    with pytest.raises(PretrainedError, match=f"no release named 'vae-mnist-st-tiyn'; did you mean {NAME}"):
        load_pretrained("vae-mnist-st-tiyn", manifest=released)


def test_a_file_whose_hash_differs_is_refused_naming_it(released, tmp_path):
    manifest = copy_of(released, tmp_path)
    weights = manifest.parent / f"{NAME}.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(PretrainedError, match=f"refusing {weights}: its sha256 is"):
        load_pretrained(NAME, manifest=manifest)


def rewrite_entry(manifest: Path, **changes) -> None:
    document = json.loads(manifest.read_text())
    document["releases"][NAME].update(changes)
    manifest.write_text(json.dumps(document))


def test_a_truncated_file_is_refused_even_with_a_matching_hash(released, tmp_path):
    manifest = copy_of(released, tmp_path)
    weights = manifest.parent / f"{NAME}.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    rewrite_entry(manifest, sha256=hashlib.sha256(weights.read_bytes()).hexdigest())
    with pytest.raises(PretrainedError, match="is not a readable safetensors file"):
        load_pretrained(NAME, manifest=manifest)


class Payload:
    """Unpickling this would create a file: the test checks that it never does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_pickled_checkpoint_in_place_of_the_weights_is_refused_and_never_run(released, tmp_path):
    manifest = copy_of(released, tmp_path)
    weights = manifest.parent / f"{NAME}.safetensors"
    marker = tmp_path / "executed"
    weights.write_bytes(pickle.dumps({"state_dict": Payload(marker)}))
    rewrite_entry(manifest, sha256=hashlib.sha256(weights.read_bytes()).hexdigest())
    with pytest.raises(PretrainedError, match="never unpickled"):
        load_pretrained(NAME, manifest=manifest)
    assert not marker.exists()


def test_an_entry_whose_shapes_do_not_fit_the_weights_is_refused(released, tmp_path):
    manifest = copy_of(released, tmp_path)
    entry = json.loads(manifest.read_text())["releases"][NAME]
    rewrite_entry(manifest, hyper_parameters={**entry["hyper_parameters"], "latents": 5})
    with pytest.raises(PretrainedError, match="do not fit the model its manifest entry builds .*wrong shape"):
        load_pretrained(NAME, manifest=manifest)


def test_an_entry_of_another_model_class_is_refused(released, tmp_path):
    manifest = copy_of(released, tmp_path)
    rewrite_entry(manifest, model="listops")
    with pytest.raises(PretrainedError, match="does not build a 'listops' model"):
        load_pretrained(NAME, manifest=manifest)


def test_a_missing_file_is_fetched_from_its_url_with_its_hash_checked(released, tmp_path, monkeypatch):
    manifest = copy_of(released, tmp_path)
    hosted = tmp_path / "hosted.safetensors"
    (manifest.parent / f"{NAME}.safetensors").rename(hosted)
    rewrite_entry(manifest, url=hosted.as_uri())
    monkeypatch.setenv("DISCRETE_ZOO_CACHE", str(tmp_path / "cache"))
    model = load_pretrained(NAME, manifest=manifest)
    assert (tmp_path / "cache" / "checkpoints" / f"{NAME}.safetensors").is_file() and not model.training
    rewrite_entry(manifest, sha256="0" * 64)
    with pytest.raises(PretrainedError, match="its sha256 is"):
        load_pretrained(NAME, manifest=manifest)


def test_a_missing_file_without_a_url_says_how_to_restore_it(released, tmp_path):
    manifest = copy_of(released, tmp_path)
    (manifest.parent / f"{NAME}.safetensors").unlink()
    with pytest.raises(PretrainedError, match="weights of 'vae-mnist-st-tiny' are missing"):
        load_pretrained(NAME, manifest=manifest)


def test_fine_tuning_with_another_estimator_starts_from_the_released_weights(released, data_dir, tmp_path,
                                                                            monkeypatch):
    monkeypatch.setattr("zoo.pretrained.MANIFEST", released)
    arguments = ["--from-pretrained", NAME, "--estimator", "reinmax", "--data-dir", str(data_dir), "--max-steps",
                 "1", "--lr", "0", "--output-dir", str(tmp_path), "--accelerator", "cpu", "--devices", "1",
                 "--trainer-arg", "enable_progress_bar=false"]
    assert train.main(arguments) == 0
    run = tmp_path / "vae-mnist-reinmax" / "version_0"
    fine_tuned = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert fine_tuned["hyper_parameters"]["estimator"] == "reinmax"
    assert fine_tuned["hyper_parameters"]["latents"] == 3  # the release's settings
    original = load_pretrained(NAME, manifest=released).state_dict()
    for key, value in original.items():  # lr 0: the step leaves the released weights as they were
        torch.testing.assert_close(fine_tuned["state_dict"][key], value)


def test_from_pretrained_refuses_another_model_and_a_checkpoint_to_resume(released, monkeypatch, capsys):
    monkeypatch.setattr("zoo.pretrained.MANIFEST", released)
    for extra, message in ((["--model", "bvae"], "is a 'vae' model, not 'bvae'; drop --model"),
                           (["--resume", "run.ckpt"], "Pass one of them (--resume auto may go with it)")):
        with pytest.raises(SystemExit):
            train.main(["--from-pretrained", NAME, *extra])
        assert message in capsys.readouterr().err


# The releases of this repository.

RELEASES = read_manifest()


def test_the_manifest_schema_and_the_size_budget():
    for name, release_ in RELEASES.items():
        entry = release_.entry
        assert (ROOT / "checkpoints" / entry["file"]).is_file() or entry["url"], name
        assert entry["command"].startswith("python train.py"), name
        if entry["model"] == "nas-net":  # the genotype, too, comes from a recorded train.py search
            assert entry["found_by"]["command"].startswith("python train.py --model gdas"), name
            assert entry["found_by"]["genotype"] == entry["hyper_parameters"]["genotype"], name
        assert entry["metrics"] and all({"value", "tolerance", "how", "first_batches"} <= set(m)
                                        for m in entry["metrics"].values())
        assert len(entry["sha256"]) == 64 and entry["dtype"] in ("float16", "bfloat16", "float32")
    assert sum(release_.entry["size_bytes"] for release_ in RELEASES.values()) <= 30_000_000
    assert {release_.model for release_ in RELEASES.values()} >= {"vae", "bvae", "listops", "gdas", "moe"}


def test_the_readme_table_is_the_manifests():
    assert markdown_table() in (ROOT / "README.md").read_text()


def test_zoo_exports_the_release_functions():
    assert zoo.list_pretrained is list_pretrained and zoo.load_pretrained is load_pretrained


@pytest.mark.parametrize("name", sorted(RELEASES))
def test_every_release_loads_and_re_measures_its_metric_on_its_first_test_batches(name):
    """The quick check: the recorded metric of the first test batches, to the release's tolerance."""
    for metric, recorded in re_measure(name, batches=FIRST_BATCHES).items():
        assert abs(recorded["measured"] - recorded["first_batches"]["value"]) <= recorded["tolerance"], metric
        assert recorded["first_batches"]["batches"] == FIRST_BATCHES


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(RELEASES))
def test_every_release_loads_and_re_measures_its_metric(name):
    for metric, recorded in re_measure(name).items():
        assert abs(recorded["measured"] - recorded["value"]) <= recorded["tolerance"], (metric, recorded["measured"])


def re_measure(name: str, batches: int | None = None) -> dict[str, dict]:
    """Each recorded metric of release ``name`` with what its weights measure now (``measured``)."""
    from datamodules.images import DataUnavailableError
    from zoo.evaluate import measure

    release_ = RELEASES[name]
    try:
        measured = measure(release_, load_pretrained(name), batches=batches)
    except DataUnavailableError as error:
        pytest.skip(f"the data of {name} is not on this machine: {str(error).splitlines()[0]}")
    return {metric: {**recorded, "measured": measured[metric]} for metric, recorded in release_.metrics.items()}


def test_zoo_parse_shows_the_released_parsers_tree_and_refuses_other_releases(capsys):
    from zoo import parse

    parsers = list_pretrained("listops*")
    command = ["[MAX 2 9 [MIN 4 7 ] 0 ]", "--pretrained"]
    assert parse.main([*command, parsers[0]]) == 0
    shown = capsys.readouterr().out
    assert "true value: 9" in shown and "tree:" in shown
    with pytest.raises(SystemExit) as refused:
        parse.main([*command, "vae-fashion-mnist-reinmax"])
    assert refused.value.code == 2
    assert f"is a vae release, not a ListOps parser; ListOps releases: {', '.join(parsers)}" in capsys.readouterr().err
