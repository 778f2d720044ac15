"""Writing encoded chunks while the next ones are encoded.

``binascii`` holds the GIL while it encodes, but ``os.writev`` and ``os.fdatasync`` release it: a helper
thread that hands batches of chunks to the kernel (and, for files that will be fsynced anyway, starts
their writeback to disk early) overlaps the copy into the page cache and the disk write with encoding.
"""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor

#: bytes handed to one writev call; few GIL hand-overs, bounded memory
BATCH_BYTES = 8 << 20
#: batches queued before the encoder waits
MAX_PENDING = 4
#: os.writev takes at most this many buffers (IOV_MAX is 1024 on Linux)
MAX_IOV = 512

_datasync = getattr(os, "fdatasync", os.fsync)  # macOS has no fdatasync


def available() -> bool:
    """Whether this platform has os.writev (Windows has not: callers write directly)."""
    return hasattr(os, "writev")


class BackgroundWriter:
    """``write(buffer)`` in order into ``f`` (a binary file with a file descriptor) from a helper thread.

    ``sync_every`` bytes, the helper calls ``os.fdatasync`` so the final fsync finds little left to do.
    Use as a context manager: leaving it waits for every write and re-raises the helper's errors.
    """

    def __init__(self, f, *, sync_every: int | None = None) -> None:
        f.flush()
        self._fd = f.fileno()
        self._sync_every = sync_every
        self._unsynced = 0
        self._batch: list[bytes] = []
        self._batch_bytes = 0
        self._futures: deque[Future] = deque()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="wts-writer")

    def __enter__(self) -> BackgroundWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self._submit()
            self._drain(raise_errors=exc_type is None)
        finally:
            self._executor.shutdown(wait=True)

    def write(self, buffer) -> None:
        size = memoryview(buffer).nbytes
        if size:
            self._batch.append(buffer)
            self._batch_bytes += size
            if self._batch_bytes >= BATCH_BYTES or len(self._batch) >= MAX_IOV:
                self._submit()

    def _submit(self) -> None:
        if not self._batch:
            return
        while len(self._futures) >= MAX_PENDING:
            self._futures.popleft().result()
        self._futures.append(self._executor.submit(self._write_batch, self._batch, self._batch_bytes))
        self._batch, self._batch_bytes = [], 0

    def _drain(self, raise_errors: bool) -> None:
        while self._futures:
            future = self._futures.popleft()
            if raise_errors:
                future.result()
            else:
                future.exception()  # wait; the caller's exception wins

    def _write_batch(self, buffers: list, total: int) -> None:
        views = [memoryview(b).cast("B") for b in buffers]
        while views:
            written = os.writev(self._fd, views)
            if written <= 0:
                raise OSError(f"writev wrote {written} of {sum(len(v) for v in views)} bytes")
            while views and written >= len(views[0]):  # drop what was written, keep a partial rest
                written -= len(views[0])
                views.pop(0)
            if views and written:
                views[0] = views[0][written:]
        self._unsynced += total
        if self._sync_every is not None and self._unsynced >= self._sync_every:
            _datasync(self._fd)
            self._unsynced = 0
