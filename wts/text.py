"""The tensorrtx ``.wts`` text format: a strict vectorized reader and a byte-exact writer.

Layout (docs/wts-format.md)::

    N\\n
    <name> <count> <hex> <hex> ...\\n      (N lines)

each ``<hex>`` being the float32 bit pattern in big-endian order as 8 lowercase hex digits.

Reading has two paths per line. The fast path handles what writers emit (one or two spaces, then
``count`` tokens of exactly 8 digits, one space apart): the values form ``count`` fixed 9-byte records,
decoded by the optional C extension ``wts._fasthex`` (built by setup.py where a compiler is), else by numpy
gathering the 8 digit bytes of each record and ``binascii.a2b_hex`` decoding them. Any
other line (``0x`` prefixes, short tokens, tabs, runs of spaces, or a defect) goes to the general
path: numpy finds token boundaries in bounded chunks and decodes the tokens with lookup tables; it
finds the exact token and line of any defect. Neither path loops over values in Python, and no array is allocated
before the line has been checked to hold ``count`` values.
"""

from __future__ import annotations

import binascii
import mmap
import os
import re
import stat
from collections.abc import Callable, Iterable

import numpy as np

from wts import sink
from wts.errors import WtsFormatError, WtsWriteError
from wts.sink import BackgroundWriter

try:  # the optional C decoder/encoder of the fast paths (setup.py); numpy + binascii below do the same, slower
    from wts._fasthex import decode_records as _decode_records
    from wts._fasthex import encode_records as _encode_records
except ImportError:  # pragma: no cover - depends on whether the extension was compiled
    _decode_records = _encode_records = None

#: values per numpy/binascii call: big enough to amortize call overhead, small enough to stay in cache
CHUNK = 1 << 16
#: bytes of line text the general path tokenizes at once
TOKEN_CHUNK = 1 << 18
#: bytes of a line searched for its name and count before the line end is known
HEAD_WINDOW = 4096
#: tensorrtx reads counts as uint32
MAX_COUNT = 2**32 - 1

_WS = b" \t\r\x0b\x0c"
_HEAD = re.compile(rb"[ \t\r\x0b\x0c]*([^ \t\r\n\x0b\x0c]+)(?:[ \t\r\x0b\x0c]+([^ \t\r\n\x0b\x0c]+))?")
_WS_RE = re.compile(rb"[ \t\r\x0b\x0c]")
_NON_WS_RE = re.compile(rb"[^ \t\r\x0b\x0c\n]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

_ASCII_ZEROS = np.uint64(0x3030303030303030)
# hex digit value of each byte, 255 for non-digits
_HEX_LUT = np.full(256, 255, dtype=np.uint8)
for _i, _c in enumerate(b"0123456789abcdef"):
    _HEX_LUT[_c] = _i
for _i, _c in enumerate(b"ABCDEF"):
    _HEX_LUT[_c] = 10 + _i


def _short(token: bytes, limit: int = 24) -> str:
    text = token[:limit].decode("ascii", "backslashreplace")
    return repr(text + ("..." if len(token) > limit else ""))


class _Reader:
    def __init__(self, path: str, data) -> None:
        self.path = path
        self.data = data  # bytes or mmap
        self.size = len(data)
        self.buf = np.frombuffer(data, dtype=np.uint8)

    def error(self, line: int | None, tensor: str | None, problem: str) -> WtsFormatError:
        return WtsFormatError(self.path, line, tensor, problem)

    # ---- lines ----------------------------------------------------------------------------------
    def _rstrip(self, start: int, end: int) -> int:
        """End of the line ``[start, end)`` without trailing whitespace (CR, spaces, tabs)."""
        tail = bytes(self.data[max(start, end - 64) : end])
        stripped = tail.rstrip(_WS)
        if stripped or end - start <= 64:
            return end - (len(tail) - len(stripped))
        return start + len(bytes(self.data[start:end]).rstrip(_WS))

    def read(self) -> dict[str, np.ndarray]:
        data, size = self.data, self.size
        if size == 0 or not _NON_WS_RE.search(data):
            raise self.error(1, None, "empty file (expected the tensor count on line 1)")
        end = data.find(b"\n")
        end = size if end < 0 else end
        header = bytes(data[: self._rstrip(0, end)]).strip(_WS)
        if not header.isdigit() or len(header) > 10:
            raise self.error(1, None, f"line 1 must be the number of tensors, found {_short(header)}")
        declared = int(header)
        tensors: dict[str, np.ndarray] = {}
        first_line: dict[str, int] = {}
        pos, lineno, last = end + 1, 1, None
        while pos < size:
            lineno += 1
            head, values, end = self._canonical_line(pos)
            complete = True
            if values is None:
                end = data.find(b"\n", pos)
                complete = end >= 0
                end = end if complete else size
                head = _HEAD.match(data, pos, self._rstrip(pos, end))
            if head is None:  # a blank line: fine only if nothing but whitespace follows
                if not _NON_WS_RE.search(data, pos):
                    break
                raise self.error(lineno, None, f"empty line (after tensor {last!r})" if last else "empty line")
            name = self._name(head.group(1), lineno)
            if len(tensors) == declared:
                raise self.error(lineno, name, f"line 1 declares {declared} tensors but this line holds another one")
            if name in tensors:
                raise self.error(lineno, name, f"duplicate tensor name (first on line {first_line[name]})")
            if values is None:
                count = self._count(head.group(2), lineno, name)
                values = self._values(head.end(), head.endpos, count, lineno, name, complete)
            tensors[name] = values
            if not complete:  # a cut inside the last token would otherwise go unnoticed
                raise self.error(lineno, name, "the file ends inside this line (no final newline); truncated file?")
            first_line[name] = lineno
            last = name
            pos = end + 1
        if len(tensors) != declared:
            after = f" (last tensor: {last!r})" if last else ""
            raise self.error(
                (first_line[last] if last else 1) + 1,
                None,
                f"line 1 declares {declared} tensors but the file ends after {len(tensors)}{after}; truncated file?",
            )
        return tensors

    def _canonical_line(self, pos: int):
        """(head match, values, line end) of a line exactly as trtx/tensorrtx write it, found without
        scanning for the newline first; (None, None, None) for any other line."""
        head = _HEAD.match(self.data, pos, min(self.size, pos + HEAD_WINDOW))
        if head is None or head.end() - pos == HEAD_WINDOW:
            return None, None, None
        raw = head.group(2)
        if raw is None or not raw.isdigit() or len(raw) > 10:
            return None, None, None
        count = int(raw)
        end = head.end() + 9 * count
        if count == 0 or end >= self.size or self.data[end] != 0x0A:  # 0x0A: "\n"
            return None, None, None
        values = self._fast(head.end(), end, count)
        return (head, values, end) if values is not None else (None, None, None)

    def _name(self, raw: bytes, lineno: int) -> str:
        try:
            name = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self.error(lineno, None, f"tensor name {_short(raw)} is not valid UTF-8") from None
        if _CONTROL.search(name):
            raise self.error(lineno, None, f"tensor name {_short(raw)} contains control characters")
        return name

    def _count(self, raw: bytes | None, lineno: int, name: str) -> int:
        if raw is None:
            raise self.error(lineno, name, "line ends after the name: the value count is missing")
        if not raw.isdigit():
            raise self.error(lineno, name, f"value count {_short(raw)} is not a decimal number")
        if len(raw) > 10 or int(raw) > MAX_COUNT:
            raise self.error(lineno, name, f"value count {_short(raw)} is absurd (more than {MAX_COUNT})")
        return int(raw)

    # ---- values ---------------------------------------------------------------------------------
    def _values(self, start: int, end: int, count: int, lineno: int, name: str, complete: bool) -> np.ndarray:
        """The ``count`` values in ``data[start:end]`` (whitespace before the first value included)."""
        if count * 2 > end - start:  # each value needs a separator and at least one digit
            raise self._count_error(start, end, count, lineno, name, complete)
        if count == 0:
            if _NON_WS_RE.search(self.data, start, end):
                raise self._count_error(start, end, count, lineno, name, complete)
            return np.empty(0, dtype=np.float32)
        out = self._fast(start, end, count)
        if out is None:
            out = self._general(start, end, count, lineno, name, complete)
        return out

    def _fast(self, start: int, end: int, count: int) -> np.ndarray | None:
        """Fixed 9-byte records ``" hhhhhhhh"``; None when the line has any other layout."""
        vstart = end - 9 * count
        if vstart < start or vstart - start > 8 or not bytes(self.data[start:vstart]).strip(_WS) == b"":
            return None
        if _decode_records is not None:
            out = np.empty(count, dtype=np.float32)
            return out if _decode_records(self.data, vstart, count, out) < 0 else None
        records = self.buf[vstart:end].reshape(count, 9)
        digits = np.ndarray((count,), dtype=np.uint64, buffer=self.data, offset=vstart + 1, strides=(9,))
        out = np.empty(count, dtype=np.float32)
        bits = out.view(np.uint32)
        staging = np.empty(min(count, CHUNK), dtype=np.uint64)
        for i in range(0, count, CHUNK):
            j = min(i + CHUNK, count)
            if not (records[i:j, 0] == 0x20).all():
                return None
            stage = staging[: j - i]
            np.copyto(stage, digits[i:j])
            try:
                raw = binascii.a2b_hex(stage)
            except binascii.Error:
                return None
            bits[i:j] = np.frombuffer(raw, dtype=">u4")
        return out

    def _general(self, start: int, end: int, count: int, lineno: int, name: str, complete: bool) -> np.ndarray:
        parts: list[np.ndarray] = []
        seen = 0
        for chunk in self._token_chunks(start, end):
            starts, ends = self._token_bounds(chunk, lineno, name)
            if seen + len(starts) > count:
                raise self._count_error(start, end, count, lineno, name, complete)
            parts.append(self._decode_tokens(chunk, starts, ends, seen, lineno, name))
            seen += len(starts)
        if seen != count:
            raise self._count_error(start, end, count, lineno, name, complete)
        return np.concatenate(parts).view(np.float32) if len(parts) != 1 else parts[0].view(np.float32)

    def _token_chunks(self, start: int, end: int) -> Iterable[np.ndarray]:
        """``data[start:end]`` as uint8 views of about TOKEN_CHUNK bytes, cut at whitespace."""
        pos = start
        while pos < end:
            cut = min(pos + TOKEN_CHUNK, end)
            if cut < end:
                ws = _WS_RE.search(self.data, cut, end)
                cut = ws.start() if ws else end
            yield self.buf[pos:cut]
            pos = cut

    def _token_bounds(self, chunk: np.ndarray, lineno: int, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Start and end offsets of the whitespace-separated tokens in ``chunk``."""
        space = chunk == 0x20
        space |= (chunk >= 0x09) & (chunk <= 0x0D)  # \t \v \f \r (a line holds no \n)
        control = (chunk < 0x20) & ~space
        if control.any():
            byte = int(chunk[np.argmax(control)])
            what = "a NUL byte" if byte == 0 else f"the control character 0x{byte:02x}"
            raise self.error(lineno, name, f"line contains {what}")
        solid = np.zeros(len(chunk) + 2, dtype=np.int8)
        np.logical_not(space, out=solid[1:-1], casting="unsafe")
        edges = np.diff(solid)
        return np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)

    def _count_error(self, start: int, end: int, count: int, lineno: int, name: str, complete: bool) -> WtsFormatError:
        found = sum(len(self._token_bounds(chunk, lineno, name)[0]) for chunk in self._token_chunks(start, end))
        if not complete and found < count:
            return self.error(lineno, name, f"file ends after {found} of {count} values; truncated file?")
        return self.error(lineno, name, f"count says {count} values but the line has {found}")

    def _decode_tokens(
        self, chunk: np.ndarray, starts: np.ndarray, ends: np.ndarray, first: int, lineno: int, name: str
    ) -> np.ndarray:
        """Tokens ``chunk[starts[i]:ends[i]]`` of 1-8 hex digits, optionally ``0x``-prefixed -> uint32.

        The 8 bytes ending at each token end are gathered as one little-endian uint64, the bytes before
        the digits are replaced by "0", and ``binascii.a2b_hex`` decodes and validates the result.
        """
        if not len(starts):
            return np.empty(0, dtype=np.uint32)
        lengths = ends - starts
        second = chunk[np.minimum(starts + 1, len(chunk) - 1)]
        prefixed = (lengths > 2) & (chunk[starts] == ord("0")) & ((second | 0x20) == ord("x"))
        ndigits = lengths - 2 * prefixed
        bad = (ndigits < 1) | (ndigits > 8)
        if bad.any():
            raise self._token_error(chunk, starts, ends, int(np.argmax(bad)), first, lineno, name)
        padded = np.empty(len(chunk) + 8, dtype=np.uint8)
        padded[:8] = ord("0")
        padded[8:] = chunk
        windows = np.ndarray((len(chunk) + 1,), dtype="<u8", buffer=padded, strides=(1,))  # [p] = padded[p:p+8]
        words = windows[ends]  # the 8 bytes before each token end
        keep = np.left_shift(np.uint64(0xFFFFFFFFFFFFFFFF), ((8 - ndigits) * 8).astype(np.uint64))
        words = ((words & keep) | (_ASCII_ZEROS & ~keep)).astype("<u8")
        try:
            raw = binascii.a2b_hex(words)
        except binascii.Error:
            invalid = (_HEX_LUT[words.view(np.uint8).reshape(-1, 8)] == 255).any(axis=1)
            raise self._token_error(chunk, starts, ends, int(np.argmax(invalid)), first, lineno, name) from None
        return np.frombuffer(raw, dtype=">u4").astype(np.uint32)

    def _token_error(self, chunk, starts, ends, index: int, first: int, lineno: int, name: str) -> WtsFormatError:
        token = chunk[starts[index] : ends[index]].tobytes()
        return self.error(lineno, name, f"value {first + index + 1}: token {_short(token)} is not 1-8 hex digits")


def _readable_kind(f) -> bool:
    """A regular file or a pipe: never a device such as /dev/zero, whose reading would not end."""
    mode = os.fstat(f.fileno()).st_mode
    return stat.S_ISREG(mode) or stat.S_ISFIFO(mode)


def read_wts(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Parse a ``.wts`` file into ``name -> flat float32 array`` (file order); raises WtsFormatError."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        if not _readable_kind(f):
            raise WtsFormatError(path, None, None, "not a regular file (a device or a directory?)")
        try:
            data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except (ValueError, OSError):  # empty file, or a file that cannot be mapped (pipe, /proc)
            data = f.read()
    reader = _Reader(path, data)
    try:
        return reader.read()
    finally:
        del reader
        if isinstance(data, mmap.mmap):
            try:
                data.close()
            except BufferError:  # a traceback still holds a view; the mapping closes when it is freed
                pass


# ---- writing ------------------------------------------------------------------------------------
def check_name(name: object) -> bytes:
    """A tensor name as the bytes written: non-empty, no whitespace or control characters."""
    if not isinstance(name, str) or not name or any(c.isspace() for c in name) or _CONTROL.search(name):
        raise WtsWriteError(f"tensor name {name!r} cannot be written: names must be non-empty, without whitespace")
    return name.encode("utf-8")


def as_float32(name: str, value) -> np.ndarray:
    """``value`` (numpy array, scalar, CPU torch tensor) as a flat contiguous float32 array."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch tensor, without importing torch
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":
            value = value.float()
        value = value.numpy()
    array = np.asarray(value)
    if array.dtype.kind not in "biuf":
        raise WtsWriteError(f"tensor {name!r} has dtype {array.dtype}; weights must be numeric")
    if array.dtype != np.float32:
        with np.errstate(over="ignore", invalid="ignore"):
            array = array.astype(np.float32)
    return np.ascontiguousarray(array).reshape(-1)


def write_wts(
    tensors: Iterable[tuple[str, np.ndarray]],
    f,
    *,
    count: int,
    progress: Callable[[int], None] | None = None,
    sync_every: int | None = None,
) -> None:
    """Write tensorrtx's exact layout: ``N``, then ``name count`` and `` hhhhhhhh`` per value.

    ``f`` is a binary file; one with a file descriptor is written from a helper thread
    (:class:`wts.sink.BackgroundWriter`, which also fdatasyncs every ``sync_every`` bytes).
    """
    try:
        f.fileno()
    except (AttributeError, OSError, ValueError):  # BytesIO and friends: plain writes
        _encode(tensors, f.write, count, progress)
        return
    if not sink.available():
        _encode(tensors, f.write, count, progress)
        return
    with BackgroundWriter(f, sync_every=sync_every) as writer:
        _encode(tensors, writer.write, count, progress)


def _encode(tensors, write: Callable, count: int, progress: Callable[[int], None] | None) -> None:
    write(b"%d\n" % count)
    for name, array in tensors:
        write(check_name(name) + b" %d" % array.size)
        bits = array.view(np.uint32)
        for i in range(0, array.size, CHUNK):
            chunk = bits[i : i + CHUNK]
            for part in _records(chunk):
                write(part)
            if progress is not None:
                progress(chunk.size)
        write(b"\n")


def _records(bits: np.ndarray) -> tuple:
    """`` hhhhhhhh`` per value of ``bits`` (uint32), as buffers to write in order. Each call returns fresh
    buffers: the writer thread may still hold the previous ones."""
    if _encode_records is not None:
        records = bytearray(9 * bits.size)
        _encode_records(np.ascontiguousarray(bits), records)
        return (records,)
    big_endian = bits.astype(">u4")  # integer swap: NaN payloads survive
    return b" ", binascii.b2a_hex(big_endian, b" ", 4)
