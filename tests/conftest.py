"""Fixtures shared across the test packages."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.runs import write_images


@pytest.fixture(scope="session")
def tiny_mnist(tmp_path_factory) -> Path:
    """A tiny MNIST-format folder for train.py runs: 60 training and 20 test images, with labels."""
    return write_images(tmp_path_factory.mktemp("tiny-mnist"), 60, 20, compressed=True)
