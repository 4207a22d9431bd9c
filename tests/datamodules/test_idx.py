"""The IDX reader and writer: exact round trips, and a clear error for every broken file."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
import torch

from datamodules.idx import IDX_DTYPES, read_idx, write_idx

NAMES = ("data.idx", "data.idx.gz")


def sample(dtype: torch.dtype) -> torch.Tensor:
    """Values that exercise every byte of ``dtype``, extremes included."""
    if dtype.is_floating_point:
        finfo = torch.finfo(dtype)
        values = torch.tensor([0.0, -1.5, 3.25e-3, finfo.max, finfo.min, finfo.tiny], dtype=dtype)
    else:
        iinfo = torch.iinfo(dtype)
        values = torch.tensor([0, 1, -1 if iinfo.min else 2, iinfo.max, iinfo.min, 77], dtype=dtype)
    return values.reshape(2, 3)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", IDX_DTYPES.values(), ids=str)
def test_round_trip(tmp_path: Path, name: str, dtype: torch.dtype) -> None:
    tensor = sample(dtype)
    write_idx(tmp_path / name, tensor)
    loaded = read_idx(tmp_path / name)
    assert loaded.dtype == dtype
    assert torch.equal(loaded, tensor)


@pytest.mark.parametrize("shape", [(5,), (4, 28, 28), (2, 1, 3, 1), (0, 28, 28)])
def test_round_trip_shapes(tmp_path: Path, shape: tuple[int, ...]) -> None:
    tensor = torch.arange(torch.Size(shape).numel(), dtype=torch.int32).reshape(shape)
    write_idx(tmp_path / "data.idx.gz", tensor)
    assert torch.equal(read_idx(tmp_path / "data.idx.gz"), tensor)


def test_layout_is_big_endian_idx(tmp_path: Path) -> None:
    write_idx(tmp_path / "data.idx", torch.tensor([[1, 258]], dtype=torch.int32))
    assert (tmp_path / "data.idx").read_bytes() == bytes.fromhex(
        "0000 0c02 00000001 00000002 00000001 00000102"
    )


def test_compression_is_recognised_by_content(tmp_path: Path) -> None:
    write_idx(tmp_path / "data.gz", torch.arange(6, dtype=torch.uint8))
    (tmp_path / "data.gz").rename(tmp_path / "renamed-without-suffix")
    loaded = read_idx(tmp_path / "renamed-without-suffix")
    assert torch.equal(loaded, torch.arange(6, dtype=torch.uint8))


def test_written_gzip_is_reproducible(tmp_path: Path) -> None:
    tensor = torch.arange(100, dtype=torch.uint8)
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        write_idx(tmp_path / folder / "data.gz", tensor)
    assert (tmp_path / "a/data.gz").read_bytes() == (tmp_path / "b/data.gz").read_bytes()


def header(type_code: int, *shape: int) -> bytes:
    return bytes([0, 0, type_code, len(shape)]) + b"".join(n.to_bytes(4, "big") for n in shape)


# Each broken file as (its bytes, words the error must contain).
BROKEN = {
    "truncated data": (
        header(0x08, 60000, 28, 28) + bytes(1000),
        ["expected 47040000 bytes", "found 1000", "truncated", "download again"],
    ),
    "truncated header": (header(0x08, 60000, 28, 28)[:9], ["ends inside", "truncated"]),
    "bad magic": (b"\x01\x02\x08\x01" + bytes(4), ["01 02 08 01", "magic"]),
    "empty file": (b"", ["nothing", "magic"]),
    "unknown type": (header(0x0A, 2) + bytes(2), ["unknown type code 0x0A", "0x08"]),
    "no dimensions": (header(0x08), ["0 dimensions"]),
    "trailing bytes": (header(0x08, 2, 2) + bytes(4 + 3), ["3 unexpected bytes", "4 bytes"]),
}


@pytest.mark.parametrize("compressed", [False, True], ids=["raw", "gz"])
@pytest.mark.parametrize("case", BROKEN)
def test_broken_file_is_a_value_error_naming_file_and_problem(
    tmp_path: Path, case: str, compressed: bool
) -> None:
    content, words = BROKEN[case]
    path = tmp_path / ("broken.gz" if compressed else "broken")
    path.write_bytes(gzip.compress(content) if compressed else content)
    with pytest.raises(ValueError) as error:
        read_idx(path)
    message = str(error.value)
    assert message.startswith(f"{path} is not a valid IDX file: ")
    for word in words:
        assert word in message


@pytest.mark.parametrize(
    "content",
    [
        gzip.compress(header(0x08, 100) + bytes(100))[:-12],  # stream cut short
        b"\x1f\x8b" + bytes(30),  # gzip magic, then garbage
    ],
    ids=["truncated-gzip", "garbage-gzip"],
)
def test_damaged_gzip_is_a_value_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="gzip stream is damaged") as error:
        read_idx(path)
    assert str(path) in str(error.value)
    assert "download again" in str(error.value)


def test_missing_file_is_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "absent.gz")


def test_write_rejects_what_idx_cannot_store(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"cannot store torch.bool; convert .* torch.uint8"):
        write_idx(tmp_path / "x.idx", torch.zeros(3, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"1 to 255 dimensions.*shape \(\)"):
        write_idx(tmp_path / "x.idx", torch.tensor(1, dtype=torch.uint8))
