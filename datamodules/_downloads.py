"""Where downloads go, and how a download that fails is told.

One cache folder holds everything the zoo fetches or generates: ``$DISCRETE_ZOO_CACHE``,
else ``$XDG_CACHE_HOME/discrete-zoo``, else ``~/.cache/discrete-zoo``; data sets go
to its ``data/`` (unless a ``data_dir`` is given), generated ListOps splits to
``listops/`` and released weights fetched by URL to ``checkpoints/``.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from http.client import HTTPException
from pathlib import Path

CACHE_ENV = "DISCRETE_ZOO_CACHE"

#: Seconds a download may wait on a silent socket. torchvision sets no timeout, so
#: behind a firewall that drops packets each attempt would hang for minutes; with this,
#: MNIST's two mirrors give up after about 20 s.
DOWNLOAD_TIMEOUT_S = 10.0

#: Errors a failed download raises: URLError and socket timeouts are OSErrors; torchvision
#: turns failed mirrors and checksum mismatches into RuntimeErrors.
DOWNLOAD_ERRORS = (OSError, RuntimeError, HTTPException)

_MAX_ERROR_CHARS = 300


class DataUnavailableError(FileNotFoundError):
    """No local copy of a data set was found and it could not be downloaded."""


def cache_dir() -> Path:
    """``$DISCRETE_ZOO_CACHE``, else ``$XDG_CACHE_HOME/discrete-zoo``, else ``~/.cache/discrete-zoo``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "discrete-zoo"


def default_data_dir() -> Path:
    """Where a data set is downloaded when no ``data_dir`` is given."""
    return cache_dir() / "data"


def find_file(folder: Path, name: str) -> Path | None:
    """``folder/name``, or else ``folder/name.gz``, whichever is a file first."""
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def describe_failure(err: BaseException) -> str:
    """A one-line account of a download error; the full one is chained as the cause."""
    text = " ".join(str(err).split())
    if len(text) > _MAX_ERROR_CHARS:
        text = text[: _MAX_ERROR_CHARS - 1] + "…"
    return f"the download failed ({type(err).__name__}: {text})"


@contextlib.contextmanager
def socket_timeout(seconds: float = DOWNLOAD_TIMEOUT_S) -> Iterator[None]:
    """Give sockets opened inside the block a timeout; torchvision's downloads set none."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)
