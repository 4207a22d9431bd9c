"""The suite runs in a home of its own and offline: nothing a test does reaches the user's files or the network."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from datamodules import cache_dir
from tests.conftest import OFFLINE, REDIRECTED

REMOTE = ("example.invalid", 80)  # a host name never resolves under .invalid: nothing leaves even if the guard fails


def test_the_home_and_every_cache_are_temporary_folders() -> None:
    home = Path.home()
    assert home.is_relative_to(tempfile.gettempdir()) and home.name.startswith("discrete-zoo-tests-home-")
    assert cache_dir() == home / ".cache" / "discrete-zoo"
    for variable in REDIRECTED:
        assert Path(os.environ[variable]).is_relative_to(home), variable


def test_a_remote_connection_is_refused_naming_the_address() -> None:
    with socket.socket() as connection, pytest.raises(OSError, match="refuse a connection to .*example.invalid"):
        connection.connect(REMOTE)


def test_localhost_stays_reachable() -> None:
    with socket.socket() as server, socket.socket() as client:
        server.bind(("127.0.0.1", 0))
        server.listen()
        client.connect(server.getsockname())


def test_a_process_a_test_starts_is_offline_and_homed_alike() -> None:
    program = ("import os, socket, pathlib; print(pathlib.Path.home())\n"
               f"try:\n    socket.create_connection({REMOTE!r}, timeout=1)\nexcept OSError as error:\n    print(error)")
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=True)
    home, error = result.stdout.splitlines()
    assert home == str(Path.home())
    assert "refuse to look up 'example.invalid'" in error
    assert str(OFFLINE) in os.environ["PYTHONPATH"].split(os.pathsep)
