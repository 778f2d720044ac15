"""The user's files: atomic writes (a reader never sees half a .wts, engine or cache file), inputs checked before
anything reads them, and outputs that may never land on an input.

A write goes to a temporary file beside the target, named ``.NAME.HOST-PID.XXXXXXXX.tmp``, which is fsynced and
renamed over the target. A process killed before the rename (SIGKILL, a power cut) leaves that file behind: the
next write of the same target removes the ones whose process is gone. Any ``OSError`` (read-only folder, full
disk, permission denied) becomes a :class:`~trtx_base.errors.FileAccessError` naming the file.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import stat
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from trtx_base.errors import FileAccessError, UserError

_UMASK = os.umask(0)  # read once, at import: os.umask can only be read by setting it
os.umask(_UMASK)
_HOST = re.sub(r"[^A-Za-z0-9_-]+", "_", socket.gethostname())[:40] or "host"
#: temporary files of the mkstemp naming trtx used before the host and pid were in the name: removed once this old
LEGACY_ORPHAN_AGE_S = 600


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside ``path``; on clean exit fsync it and rename it over ``path``."""
    path = Path(path)
    with file_errors(path, "write"):
        if path.is_dir():
            raise FileAccessError(f"cannot write {path}: it is a directory")
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_orphans(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{_HOST}-{os.getpid()}.", suffix=".tmp", dir=path.parent)
    try:
        with file_errors(path, "write"):
            os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the mode open() would
            with os.fdopen(fd, mode) as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write(path: str | os.PathLike, data: bytes | str) -> None:
    """Write ``data`` to ``path`` atomically (temp file + rename)."""
    with atomic_open(path, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)


def remove_orphans(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary files of earlier writes of ``path`` whose process no longer runs; returns them."""
    path = Path(path)
    removed = []
    prefix = f".{path.name}."
    try:
        siblings = [p for p in path.parent.iterdir() if p.name.startswith(prefix) and p.name.endswith(".tmp")]
    except OSError:
        return removed
    for p in siblings:
        tag = p.name[len(prefix) : -len(".tmp")]
        if _is_orphan(p, tag):
            with contextlib.suppress(OSError):
                p.unlink()
                removed.append(p)
    return removed


def _is_orphan(p: Path, tag: str) -> bool:
    owner = re.fullmatch(r"(?P<host>[A-Za-z0-9_-]+)-(?P<pid>\d+)\.[A-Za-z0-9_]+", tag)
    if owner is not None:
        return owner["host"] == _HOST and not _running(int(owner["pid"]))
    if re.fullmatch(r"[A-Za-z0-9_]{8}", tag):  # mkstemp's name without host and pid (older trtx)
        with contextlib.suppress(OSError):
            return time.time() - p.stat().st_mtime > LEGACY_ORPHAN_AGE_S
    return False


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


@contextlib.contextmanager
def file_errors(path: str | os.PathLike, doing: str = "read") -> Iterator[None]:
    """Turn an ``OSError`` about ``path`` (permission denied, read-only or full disk, a directory where a file
    belongs) into a one-line :class:`FileAccessError` naming it."""
    try:
        yield
    except FileAccessError:
        raise
    except OSError as exc:
        raise FileAccessError(f"cannot {doing} {path}: {exc.strerror or exc}") from None


def check_input(path: str | os.PathLike, what: str) -> Path:
    """``path`` as an input file the user named (``what``: ``-w weights``, ``image``): it exists, is a file (a
    regular one, or a pipe; never a directory or a device such as /dev/zero, whose reading would not end) and can
    be read. Raises :class:`FileAccessError` naming it and what it is instead."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise FileAccessError(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise FileAccessError(f"{what} {path}: {exc.strerror or exc}") from None
    except ValueError:  # a NUL character: no file can have that name
        raise FileAccessError(f"{what} {str(path)!r} is not a valid file name") from None
    if stat.S_ISDIR(mode):
        raise FileAccessError(f"{what} {path} is a directory, not a file")
    if not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode)):
        raise FileAccessError(f"{what} {path} is not a regular file (a device?)")
    if not os.access(path, os.R_OK):
        raise FileAccessError(f"{what} {path}: permission denied")
    return path


def check_output(path: str | os.PathLike, what: str, inputs: Iterable[str | os.PathLike | None] = ()) -> Path:
    """``path`` as an output the user named: not a directory, and never one of ``inputs`` (the same file by
    any name). Raises :class:`UserError` before anything is computed."""
    path = Path(path)
    if "\0" in str(path):
        raise UserError(f"{what} {str(path)!r} is not a valid file name")
    if path.is_dir():
        raise UserError(f"{what} {path} is a directory; give a file name")
    for source in inputs:
        if source is not None and same_file(path, source):
            raise UserError(f"{what} {path} is the input {source}: trtx never writes over an input; choose another")
    return path


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether ``a`` and ``b`` name the same file (links and relative paths included; one that does not exist yet
    is compared by its absolute path)."""
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        with contextlib.suppress(ValueError):
            return os.path.abspath(os.path.realpath(a)) == os.path.abspath(os.path.realpath(b))
        return False
