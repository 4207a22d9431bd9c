"""Released weights: the manifest in ``checkpoints/``, and loading a release as a ready LightningModule.

    import zoo
    zoo.list_pretrained("vae-*")
    model = zoo.load_pretrained("vae-fashion-mnist-reinmax")   # eval mode, float32

Each release is one ``.safetensors`` file (tensors only, so loading executes
nothing from the file) and one entry of ``checkpoints/manifest.json``: the model
and its constructor's arguments, the data, estimator and τ, the ``train.py``
command that produced it, its metrics and how they were measured, its parameter
count, file name, size and sha256. The hash is checked before the file is read.
An entry with a ``url`` is fetched into the cache folder's ``checkpoints/``
(``datamodules.cache_dir()``: ``$DISCRETE_ZOO_CACHE``, else XDG's) when the file is
not beside the manifest.
"""

from __future__ import annotations

import difflib
import fnmatch
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch

from datamodules import cache_dir
from zoo.models import get_model_class

#: The manifest of the releases in this repository.
MANIFEST = Path(__file__).resolve().parents[1] / "checkpoints" / "manifest.json"
REQUIRED_FIELDS = ("model", "hyper_parameters", "data", "estimator", "tau", "command", "metrics", "parameters",
                   "file", "size_bytes", "sha256", "dtype", "url")


class PretrainedError(ValueError):
    """A release that cannot be loaded as its manifest says: the message names the entry or file and the fix."""


@dataclass(frozen=True)
class Release:
    """One manifest entry."""

    name: str
    entry: dict[str, Any]

    @property
    def model(self) -> str:
        return self.entry["model"]

    @property
    def hyper_parameters(self) -> dict[str, Any]:
        return dict(self.entry["hyper_parameters"])

    @property
    def data(self) -> dict[str, Any]:
        """``name`` and the data module's settings (``binarize``, ``val_size``, ``batch_size``)."""
        return dict(self.entry["data"])

    @property
    def metrics(self) -> dict[str, dict[str, Any]]:
        """``{metric: {"value", "tolerance", "how"}}``."""
        return self.entry["metrics"]


def read_manifest(path: Path | None = None) -> dict[str, Release]:
    """Every release of the manifest at ``path`` (default :data:`MANIFEST`), checked for the fields loading needs."""
    path = MANIFEST if path is None else path
    try:
        document = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise PretrainedError(f"cannot read the manifest {path}: {error}") from error
    releases = {}
    for name, entry in document.get("releases", {}).items():
        missing = [field for field in REQUIRED_FIELDS if field not in entry]
        if missing:
            raise PretrainedError(f"manifest entry {name!r} in {path} lacks {', '.join(missing)}.")
        releases[name] = Release(name, entry)
    return releases


def list_pretrained(pattern: str = "*", manifest: Path | None = None) -> list[str]:
    """The names of the releases that match the shell-style ``pattern``, sorted."""
    return sorted(name for name in read_manifest(manifest) if fnmatch.fnmatchcase(name, pattern))


def get_release(name: str, manifest: Path | None = None) -> Release:
    releases = read_manifest(manifest)
    if name not in releases:
        close = difflib.get_close_matches(name, releases, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise PretrainedError(f"no release named {name!r}; {hint}releases: {', '.join(sorted(releases)) or 'none'}.")
    return releases[name]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def weights_file(release: Release, manifest: Path | None = None) -> Path:
    """The release's file, beside the manifest or fetched from its ``url``, after its sha256 is checked."""
    entry = release.entry
    path = (MANIFEST if manifest is None else manifest).parent / entry["file"]
    if not path.is_file():
        if not entry["url"]:
            raise PretrainedError(f"the weights of {release.name!r} are missing: no file {path} and no url in the "
                                  "manifest. Restore the file (e.g. git checkout checkpoints/).")
        path = _download(entry["url"], entry["file"], entry["sha256"])
    actual = sha256_of(path)
    if actual != entry["sha256"]:
        raise PretrainedError(f"refusing {path}: its sha256 is {actual}, but the manifest gives {entry['sha256']} "
                              f"for {release.name!r}. The file is corrupt, truncated or has been changed; restore it "
                              "from the release (or delete it so it is downloaded again).")
    return path


def _download(url: str, file_name: str, sha256: str) -> Path:
    cache = cache_dir() / "checkpoints"
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / file_name
    if not path.is_file():
        try:
            # hash_prefix makes torch.hub delete the download when the hash differs.
            torch.hub.download_url_to_file(url, str(path), hash_prefix=sha256, progress=True)
        except (OSError, RuntimeError) as error:
            raise PretrainedError(f"cannot download {url}: {error}. Download it by hand into {cache}.") from error
    return path


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; any other format is refused, not interpreted."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise PretrainedError(f"{path} is not a readable safetensors file ({error}); restore it from the "
                              "release. Weights are only ever read as safetensors, never unpickled.") from error


def build_model(release: Release, **overrides: Any) -> L.LightningModule:
    """The release's model class built with its hyper-parameters (and ``overrides``), untrained."""
    try:
        model_class = get_model_class(release.model)
        return model_class(**{**release.hyper_parameters, **overrides})
    except (TypeError, ValueError) as error:
        raise PretrainedError(f"manifest entry {release.name!r} does not build a {release.model!r} model: {error}"
                              ) from error


def load_pretrained(name: str, *, manifest: Path | None = None, **overrides: Any) -> L.LightningModule:
    """The release ``name`` as its LightningModule in eval mode, float32, ready to test or train further.

    ``overrides`` replace constructor arguments, e.g. ``estimator="st"`` to fine-tune
    with another estimator; the weights must still fit the model they build.
    """
    release = get_release(name, manifest)
    weights = read_weights(weights_file(release, manifest))
    model = build_model(release, **overrides)
    load_weights(model, weights, release.name)
    return model.eval()


def load_weights(model: L.LightningModule, weights: dict[str, torch.Tensor], name: str) -> None:
    """Copy ``weights`` into ``model`` in its own dtypes; every tensor must fit, and every model tensor be given.

    Only an estimator's own state (e.g. RODEO's control variates) may differ: a
    release fine-tuned with another estimator keeps the network and starts the
    estimator fresh.
    """
    own = model.state_dict()
    network = {key: tensor for key, tensor in own.items() if not key.startswith("estimator.")}
    given = {key: tensor for key, tensor in weights.items() if not key.startswith("estimator.")}
    if details := weights_mismatch(network, given):
        raise PretrainedError(f"the weights of {name!r} do not fit the model its manifest entry builds ({details}).")
    state = {key: weights[key].to(own[key].dtype) for key in own if key in weights}
    model.load_state_dict(state, strict=False)


def weights_mismatch(expected: dict[str, torch.Tensor], given: dict[str, torch.Tensor]) -> str:
    """What keeps ``given`` from loading into a model whose state is ``expected``: the missing, unexpected and
    misshapen tensors, named (a few of each); empty when they fit."""
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    misshapen = [f"{key} {list(given[key].shape)}, not {list(expected[key].shape)}"
                 for key in sorted(set(given) & set(expected)) if given[key].shape != expected[key].shape]
    return "; ".join(f"{label}: {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''}"
                     for label, keys in (("missing", missing), ("unexpected", unexpected),
                                         ("wrong shape", misshapen)) if keys)


def markdown_table(manifest: Path | None = None) -> str:
    """The README's table of releases, generated from the manifest."""
    rows = ["| name | model | data | estimator (τ) | metric | parameters | size |", "|---|---|---|---|---|--:|--:|"]
    for name, release in sorted(read_manifest(manifest).items()):
        entry = release.entry
        metrics = "; ".join(f"{metric} {value['value']:g}" for metric, value in entry["metrics"].items())
        estimator = f"{entry['estimator']} ({entry['tau']:g})" if entry["estimator"] else "–"
        if "tau_schedule" in entry:  # τ annealed over the run, as in a GDAS search
            start, end = entry["tau_schedule"]
            estimator = f"{entry['estimator']} ({start:g}→{end:g})"
        if "found_by" in entry:  # a retrained genotype: the estimator is the search's
            search = entry["found_by"]
            start, end = search["tau"]
            estimator = f"{search['estimator']} ({search['model']} search, τ {start:g}→{end:g})"
        rows.append(f"| `{name}` | {entry['model']} | {entry['data']['name']} | {estimator} | {metrics} | "
                    f"{entry['parameters']:,} | {entry['size_bytes'] / 1e6:.2f} MB |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())  # the README's table: python -m zoo.pretrained
