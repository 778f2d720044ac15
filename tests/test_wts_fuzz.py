"""Fuzzing the readers: valid files, mutated at random, either load or raise WtsFormatError (with a line).

Runs 2,000 examples for .wts (``TRTX_FUZZ_EXAMPLES`` overrides) and 250 for .safetensors.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import tempfile
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import wts
from wts import WtsFormatError

EXAMPLES = int(os.environ.get("TRTX_FUZZ_EXAMPLES", "2000"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=timedelta(seconds=20),  # generous (shared CI machines); catches hangs, not slowness
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

NAME = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789._", min_size=1, max_size=12)
BITS = st.integers(min_value=0, max_value=2**32 - 1)
JUNK = st.binary(min_size=1, max_size=12) | st.sampled_from(
    [b" ", b"\t", b"\n", b"\r\n", b"\r", b"\x00", b"0x", b"-", b"g", b"ffffffffff", b"12", b" 3f800000", b"\xff\xfe"]
)


ALPHABET = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz0123456789._", dtype=np.uint8)
KINDS = ["truncate", "flip", "delete_line", "dup_line", "count", "junk", "swap_lines", "header"]


@st.composite
def valid_files(draw) -> tuple[bytes, dict[str, list[int]]]:
    """A valid .wts file in one of the layouts writers produce, and the bit patterns it holds.

    Contents come from a numpy generator seeded by one draw: hypothesis draws are the slow part.
    """
    rng = np.random.default_rng(draw(st.integers(min_value=0, max_value=2**32 - 1)))
    first_sep, newline, trailing, style = (
        str(rng.choice(options))
        for options in (["", " "], ["\n", "\r\n"], ["", " ", "  \t"], ["padded", "0x", "short"])
    )
    tensors: dict[str, list[int]] = {}
    for i in range(int(rng.integers(1, 6))):
        name = ALPHABET[rng.integers(0, len(ALPHABET), size=int(rng.integers(1, 13)))].tobytes().decode() + str(i)
        tensors[name] = rng.integers(0, 2**32, size=int(rng.integers(0, 13)), dtype=np.uint64).tolist()

    def token(bits: int) -> str:
        if style == "padded":
            return f"{bits:08x}"
        return f"0x{bits:X}" if style == "0x" else f"{bits:x}"

    lines = [str(len(tensors))]
    for name, values in tensors.items():
        line = f"{name} {len(values)}" + (first_sep if values else "")
        line += "".join(" " + token(v) for v in values)
        lines.append(line + trailing)
    return (newline.join(lines) + newline).encode(), tensors


JUNK_PIECES = [b" ", b"\t", b"\n", b"\r\n", b"\r", b"\x00", b"0x", b"-", b"g", b"ffffffffff", b"12", b" 3f800000"]


@st.composite
def mutation_steps(draw) -> list[tuple[str, int, int, bytes]]:
    """1-3 (kind, position, byte, junk) steps from one seed."""
    rng = np.random.default_rng(draw(st.integers(min_value=0, max_value=2**32 - 1)))
    steps = []
    for _ in range(int(rng.integers(1, 4))):
        junk = (
            JUNK_PIECES[int(rng.integers(len(JUNK_PIECES)))]
            if rng.random() < 0.6
            else rng.bytes(int(rng.integers(1, 13)))
        )
        steps.append((str(rng.choice(KINDS)), int(rng.integers(0, 2**31)), int(rng.integers(0, 256)), junk))
    return steps


def mutate(data: bytes, steps) -> bytes:
    """Apply (kind, position, byte, junk) steps: positions are taken modulo the current size."""
    for kind, where, byte, junk in steps:
        if kind == "truncate":
            data = data[: where % max(len(data), 1)]
        elif kind == "flip" and data:
            pos = where % len(data)
            data = data[:pos] + bytes([byte]) + data[pos + 1 :]
        elif kind == "junk":
            pos = where % (len(data) + 1)
            data = data[:pos] + junk + data[pos:]
        elif kind != "flip":
            lines = data.split(b"\n")
            i = where % len(lines)
            if kind == "delete_line":
                del lines[i]
            elif kind == "dup_line":
                lines.insert(i, lines[i])
            elif kind == "swap_lines":
                j = (where // 7 + byte) % len(lines)
                lines[i], lines[j] = lines[j], lines[i]
            elif kind == "header":
                lines[0] = str(where * byte - 1).encode()
            else:  # the count of line i: another number, or junk
                parts = lines[i].split(b" ")
                if len(parts) > 1:
                    parts[1] = str((where * 977 + byte) % (2**40)).encode() if byte % 2 else junk
                lines[i] = b" ".join(parts)
            data = b"\n".join(lines)
    return data


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """A RAM-backed directory where there is one: thousands of rewrites of a file on a disk are slow."""
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        path = Path(tempfile.mkdtemp(prefix="trtx-fuzz-", dir="/dev/shm"))
        yield path
        shutil.rmtree(path, ignore_errors=True)
    else:
        yield tmp_path_factory.mktemp("fuzz")


@FUZZ
@given(st.data())
def test_mutated_wts_files_raise_only_wts_format_error_with_a_line(scratch, data):
    original, tensors = data.draw(valid_files())
    path = scratch / "f.wts"

    # the unmutated file loads to exactly its bit patterns
    path.write_bytes(original)
    loaded = wts.load(path)
    assert list(loaded) == list(tensors)
    for name, values in tensors.items():
        assert loaded[name].view(np.uint32).tolist() == values

    mutated = mutate(original, data.draw(mutation_steps()))
    path.write_bytes(mutated)
    try:
        result = wts.load(path)
    except WtsFormatError as err:
        message = str(err)
        assert str(path) in message
        assert re.search(r"line \d+", message), message
        assert isinstance(err.line, int) and err.line >= 1
        return
    # a mutation can leave a valid file (a flipped hex digit); it must still be well-formed
    for name in result:
        value = result.peek(name)
        assert value.dtype == np.float32 and value.ndim == 1


@settings(
    max_examples=max(EXAMPLES // 8, 50),
    deadline=timedelta(seconds=20),
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    st.lists(st.tuples(NAME, st.lists(BITS, max_size=8)), min_size=1, max_size=4, unique_by=lambda t: t[0]),
    st.data(),
)
def test_mutated_safetensors_files_raise_only_wts_format_error(scratch, tensors, data):
    path = scratch / "f.safetensors"
    wts.save({name: np.array(bits, dtype=np.uint32).view(np.float32) for name, bits in tensors}, path)
    blob = path.read_bytes()
    kind = data.draw(st.sampled_from(["truncate", "flip", "junk", "header_len"]))
    if kind == "truncate":
        blob = blob[: data.draw(st.integers(min_value=0, max_value=len(blob) - 1))]
    elif kind == "flip":
        pos = data.draw(st.integers(min_value=0, max_value=len(blob) - 1))
        blob = blob[:pos] + bytes([data.draw(st.integers(min_value=0, max_value=255))]) + blob[pos + 1 :]
    elif kind == "junk":
        pos = data.draw(st.integers(min_value=0, max_value=len(blob)))
        blob = blob[:pos] + data.draw(JUNK) + blob[pos:]
    else:
        blob = struct.pack("<Q", data.draw(st.integers(min_value=0, max_value=2**64 - 1))) + blob[8:]
    path.write_bytes(blob)
    try:
        result = wts.load(path)
    except WtsFormatError as err:
        assert str(path) in str(err)
        return
    for name in result:
        assert result.peek(name).dtype == np.float32
