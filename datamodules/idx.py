"""Read and write the IDX format, the file format of MNIST and Fashion-MNIST.

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number of
dimensions), then each dimension as a big-endian uint32, then the values in C order,
big-endian. Files may be gzip-compressed; :func:`read_idx` recognises that by content,
:func:`write_idx` compresses when the name ends in ``.gz``.

Every way a file can be broken (wrong magic, unknown type, too few or too many bytes,
a damaged gzip stream) is a ``ValueError`` that names the file and the problem, so a
half-finished download is reported as such instead of as a shape error far away.
"""

from __future__ import annotations

import gzip
import math
import sys
import zlib
from pathlib import Path
from typing import BinaryIO

import torch
from torch import Tensor

__all__ = ["IDX_DTYPES", "read_idx", "read_idx_images", "write_idx"]

#: IDX type codes and the tensor dtype each is read into.
IDX_DTYPES: dict[int, torch.dtype] = {
    0x08: torch.uint8,
    0x09: torch.int8,
    0x0B: torch.int16,
    0x0C: torch.int32,
    0x0D: torch.float32,
    0x0E: torch.float64,
}

_GZIP_MAGIC = b"\x1f\x8b"
_REDOWNLOAD = "delete it and download again"


def read_idx(path: str | Path) -> Tensor:
    """The tensor stored in the IDX file ``path`` (gzip-compressed or not).

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` for a file that
    is not valid IDX.
    """
    path = Path(path)
    with open(path, "rb") as raw:
        compressed = raw.read(2) == _GZIP_MAGIC
        raw.seek(0)
        if not compressed:
            return _read(raw, path)
        try:
            with gzip.GzipFile(fileobj=raw, mode="rb") as stream:
                return _read(stream, path)
        except (OSError, EOFError, zlib.error) as err:
            raise _invalid(
                path, f"its gzip stream is damaged ({err}); the file is corrupt or truncated, "
                f"{_REDOWNLOAD}"
            ) from err


def read_idx_images(path: str | Path) -> Tensor:
    """The 28×28 uint8 images ``(N, 28, 28)`` of an MNIST-format image file, refused if it holds anything else."""
    images = read_idx(path)
    if images.dtype != torch.uint8 or images.dim() != 3 or tuple(images.shape[1:]) != (28, 28):
        raise ValueError(
            f"{path} holds a {images.dtype} tensor of shape {tuple(images.shape)}, not 28×28 "
            "uint8 images (N, 28, 28); point data_dir at the image files of the data set."
        )
    return images


def write_idx(path: str | Path, tensor: Tensor) -> None:
    """Write ``tensor`` to ``path`` as IDX, gzip-compressed if the name ends in ``.gz``."""
    path = Path(path)
    codes = {dtype: code for code, dtype in IDX_DTYPES.items()}
    if tensor.dtype not in codes:
        raise ValueError(
            f"write_idx: IDX cannot store {tensor.dtype}; convert the tensor to one of "
            f"{', '.join(str(dtype) for dtype in codes)}."
        )
    if not 1 <= tensor.dim() <= 255 or any(size >= 1 << 32 for size in tensor.shape):
        raise ValueError(
            "write_idx: IDX needs 1 to 255 dimensions, each smaller than 2**32; "
            f"got shape {tuple(tensor.shape)}."
        )
    header = bytes([0, 0, codes[tensor.dtype], tensor.dim()])
    header += b"".join(size.to_bytes(4, "big") for size in tensor.shape)
    flat = tensor.detach().cpu().contiguous().view(-1).view(torch.uint8)
    data = _swap_to_big_endian(flat, tensor.element_size())
    payload = bytearray(data.numel())
    if payload:
        torch.frombuffer(payload, dtype=torch.uint8).copy_(data)
    if path.name.endswith(".gz"):
        # mtime=0 makes the bytes depend on the data only, so fixtures are reproducible.
        with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as stream:
            stream.write(header + payload)
    else:
        path.write_bytes(header + payload)


def _read(stream: BinaryIO, path: Path) -> Tensor:
    magic = stream.read(4)
    if len(magic) < 4 or magic[:2] != b"\0\0":
        raise _invalid(
            path, f"it starts with {magic.hex(' ') or 'nothing'}, not the IDX magic number "
            "00 00 <type> <dimensions>"
        )
    type_code, ndim = magic[2], magic[3]
    if type_code not in IDX_DTYPES:
        valid = ", ".join(f"0x{code:02X} ({dtype})" for code, dtype in IDX_DTYPES.items())
        raise _invalid(path, f"unknown type code 0x{type_code:02X}; valid codes: {valid}")
    if ndim == 0:
        raise _invalid(path, "its header declares 0 dimensions")
    dims = stream.read(4 * ndim)
    if len(dims) < 4 * ndim:
        raise _invalid(
            path, f"its header declares {ndim} dimensions but the file ends inside them "
            f"(the file is truncated; {_REDOWNLOAD})"
        )
    shape = [int.from_bytes(dims[i : i + 4], "big") for i in range(0, 4 * ndim, 4)]
    dtype = IDX_DTYPES[type_code]
    itemsize = torch.empty((), dtype=dtype).element_size()
    expected = itemsize * math.prod(shape)
    payload = bytearray(expected)
    found = _read_into(stream, payload)
    if found < expected:
        raise _invalid(
            path, f"expected {expected} bytes of data for shape {tuple(shape)} of {dtype}, "
            f"found {found} (the file is truncated; {_REDOWNLOAD})"
        )
    trailing = len(stream.read())
    if trailing:
        raise _invalid(
            path, f"{trailing} unexpected bytes follow the {expected} bytes of data for shape "
            f"{tuple(shape)} of {dtype} (the file is corrupt or not IDX; {_REDOWNLOAD})"
        )
    if not payload:
        return torch.empty(shape, dtype=dtype)
    data = _swap_to_big_endian(torch.frombuffer(payload, dtype=torch.uint8), itemsize)
    return data.contiguous().view(dtype).reshape(shape)


def _read_into(stream: BinaryIO, buffer: bytearray) -> int:
    """Fill ``buffer`` from ``stream``; the number of bytes read (less only at end of file)."""
    view = memoryview(buffer)
    filled = 0
    while filled < len(buffer):
        count = stream.readinto(view[filled:])
        if not count:
            break
        filled += count
    return filled


def _swap_to_big_endian(data: Tensor, itemsize: int) -> Tensor:
    """Reverse the bytes of each item of the flat uint8 ``data`` on little-endian machines.

    The swap is its own inverse, so it converts in both directions.
    """
    if itemsize == 1 or sys.byteorder == "big":
        return data
    return data.view(-1, itemsize).flip(1).reshape(-1)


def _invalid(path: Path, problem: str) -> ValueError:
    return ValueError(f"{path} is not a valid IDX file: {problem}.")
