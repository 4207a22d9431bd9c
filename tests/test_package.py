"""The package as a user installs it: a built wheel, outside the checkout, loads releases and trains."""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from importlib.metadata import version
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh virtual environment holding only the built wheel; it sees this environment's packages."""
    work = tmp_path_factory.mktemp("package")
    wheels = work / "wheels"
    # This environment's setuptools builds it where it is recent enough; else pip fetches one, as for any install.
    isolation = ["--no-build-isolation"] if int(version("setuptools").split(".")[0]) >= 68 else []
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "-q", "-w", str(wheels),
                    str(ROOT)], check=True, capture_output=True, cwd=work)
    environment = work / "venv"
    venv.create(environment, system_site_packages=True, with_pip=False)
    python = environment / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q",
                    *map(str, wheels.glob("*.whl"))], check=True, capture_output=True, cwd=work)
    return environment


def run_outside(environment: Path, *command: str, cwd: Path) -> subprocess.CompletedProcess:
    """A command of the environment, in a folder that is not the checkout and without it on the path."""
    variables = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    variables["PATH"] = f"{environment / 'bin'}{os.pathsep}{variables['PATH']}"
    return subprocess.run(command, cwd=cwd, env=variables, capture_output=True, text=True, timeout=300)


def test_the_installed_package_loads_a_release_from_its_own_files(installed, tmp_path):
    script = ("import zoo; model = zoo.load_pretrained('vae-fashion-mnist-reinmax'); "
              "print(zoo.__file__); print(sum(p.numel() for p in model.parameters()))")
    result = run_outside(installed, str(installed / "bin" / "python"), "-c", script, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    location, parameters = result.stdout.split()
    assert Path(location).is_relative_to(installed) and not Path(location).is_relative_to(ROOT)
    assert int(parameters) == 1_221_180


def test_the_console_script_trains_a_step(installed, tmp_path):
    result = run_outside(installed, "discrete-zoo-train", "--model", "poly", "--model-arg", "variables=4",
                         "--max-steps", "1", "--accelerator", "cpu", "--trainer-arg", "enable_progress_bar=false",
                         "--output-dir", str(tmp_path / "runs"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "runs" / "poly-none-reinmax" / "version_0" / "checkpoints" / "last.ckpt").is_file()
    result = run_outside(installed, "discrete-zoo-train", "--help", cwd=tmp_path)
    assert result.returncode == 0 and "usage: train.py" in result.stdout and "poly" in result.stdout
