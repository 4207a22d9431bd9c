"""The one cache folder every data module and the releases use, and how failed downloads are told."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from datamodules import cache_dir
from datamodules._downloads import CACHE_ENV, describe_failure, find_file, socket_timeout
from datamodules.images import ImageDataModule
from datamodules.listops import ListOpsDataModule
from datamodules.nas import NASDataModule


def test_the_cache_is_the_variable_else_xdg_else_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert cache_dir() == Path.home() / ".cache" / "discrete-zoo"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "discrete-zoo"
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "zoo"))
    assert cache_dir() == tmp_path / "zoo"


def test_every_data_module_defaults_to_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    assert ImageDataModule().data_dir == tmp_path / "data"
    assert NASDataModule("synthetic").data_dir == tmp_path / "data"
    assert ListOpsDataModule().cache_dir == tmp_path


def test_released_weights_are_fetched_into_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from zoo import pretrained

    fetched = []
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    monkeypatch.setattr("torch.hub.download_url_to_file", lambda url, path, **_: fetched.append(Path(path)))
    assert pretrained._download("https://example.org/w.safetensors", "w.safetensors", "0" * 64) == (
        tmp_path / "checkpoints" / "w.safetensors")
    assert fetched == [tmp_path / "checkpoints" / "w.safetensors"]


def test_find_file_takes_the_plain_file_before_the_compressed_one(tmp_path: Path) -> None:
    assert find_file(tmp_path, "a") is None
    (tmp_path / "a.gz").touch()
    assert find_file(tmp_path, "a") == tmp_path / "a.gz"
    (tmp_path / "a").touch()
    assert find_file(tmp_path, "a") == tmp_path / "a"


def test_a_failure_is_one_short_line() -> None:
    text = describe_failure(OSError("no route\n to host " + "x" * 1000))
    assert text.startswith("the download failed (OSError: no route to host xxx") and text.endswith("…)")
    assert "\n" not in text and len(text) < 340


def test_the_socket_timeout_holds_inside_the_block_only() -> None:
    before = socket.getdefaulttimeout()
    with socket_timeout(3.0):
        assert socket.getdefaulttimeout() == 3.0
    assert socket.getdefaulttimeout() == before
