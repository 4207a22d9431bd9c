"""Fixtures shared across the test packages, and the suite's isolation from the user's machine.

Before anything is collected, every test (and every process a test starts) gets a home
and caches of its own in a temporary folder, so no test reads or writes the user's
``~/.cache/discrete-zoo``, TensorBoard folders or Jupyter and matplotlib settings, and
network connections outside localhost are refused (``tests/offline/sitecustomize.py``).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import pytest

OFFLINE = Path(__file__).resolve().parent / "offline"
#: Where programs keep caches and settings, besides ``HOME``: each is pointed inside the temporary home.
REDIRECTED = {
    "XDG_CACHE_HOME": ".cache", "XDG_CONFIG_HOME": ".config", "XDG_DATA_HOME": ".local/share",
    "MPLCONFIGDIR": ".config/matplotlib", "JUPYTER_CONFIG_DIR": ".jupyter", "JUPYTER_DATA_DIR": ".local/share/jupyter",
    "JUPYTER_RUNTIME_DIR": ".local/share/jupyter/runtime", "IPYTHONDIR": ".ipython", "TORCH_HOME": ".cache/torch",
    "TORCHINDUCTOR_CACHE_DIR": ".cache/torchinductor", "TRITON_CACHE_DIR": ".cache/triton",
}
_saved_environment: dict[str, str] = {}
_home: Path | None = None


def pytest_configure(config: pytest.Config) -> None:
    """Point the home and the caches at a fresh folder and refuse remote connections, before collection."""
    global _home
    _saved_environment.update(os.environ)
    _home = Path(tempfile.mkdtemp(prefix="discrete-zoo-tests-home-"))
    os.environ["HOME"] = str(_home)
    for variable, folder in REDIRECTED.items():
        os.environ[variable] = str(_home / folder)
    os.environ.pop("DISCRETE_ZOO_CACHE", None)  # the cache follows XDG_CACHE_HOME
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(OFFLINE), os.environ.get("PYTHONPATH")]))
    spec = importlib.util.spec_from_file_location("tests_offline_guard", OFFLINE / "sitecustomize.py")
    spec.loader.exec_module(importlib.util.module_from_spec(spec))  # the same guard in this process


def pytest_unconfigure(config: pytest.Config) -> None:
    os.environ.clear()
    os.environ.update(_saved_environment)
    if _home is not None:
        shutil.rmtree(_home, ignore_errors=True)


@pytest.fixture(scope="session")
def tiny_mnist(tmp_path_factory) -> Path:
    """A tiny MNIST-format folder for train.py runs: 60 training and 20 test images, with labels."""
    from datamodules.tiny import write_images

    return write_images(tmp_path_factory.mktemp("tiny-mnist"), 60, 20, compressed=True)
