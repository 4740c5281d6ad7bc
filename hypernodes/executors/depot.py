"""Big shipped objects left once on this machine, for local worker processes to read.

A map sends its cloudpickled ``(pipeline, shared inputs)`` bundle to every item's task.
For a big bundle (a large shared input), writing it down the pool's pipe with every item
costs more than the items themselves. A ``Depot`` (one per ``ProcessPool``) writes it once
to a file in memory (``/dev/shm``) and the tasks carry a small ``Stored`` handle instead;
a worker reads the file at its first task of that bundle and keeps the object in a small
per-process cache (``cached`` / ``keep``), so each worker receives each bundle once,
including a worker that replaced one that died.

Files are shared by digest while any map uses them (``put`` / ``release``). On Linux a
file is unlinked as soon as it is written and workers open it through
``/proc/<pid>/fd/<fd>`` (as the halt board does), so nothing is left behind however the
orchestrator ends, a SIGKILL included. This module must not know about pipelines or
maps: it stores and reads bytes and the objects they pickle.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
import threading
from typing import Any

import cloudpickle

__all__ = ["Depot", "Stored", "cached", "keep", "reads"]

# Bundles smaller than this travel with each task: a file per map would cost more.
STORE_AT_LEAST = 256 * 1024

# The per-process cache of unpickled objects: at most this many, and (beyond the newest
# one) at most this many bytes of pickles, least recently used evicted first.
_CACHE_LIMIT = 256
_CACHE_BYTES = 512 * 1024 * 1024

_loaded: dict[bytes, tuple[Any, int]] = {}
_loaded_bytes = 0
_lock = threading.Lock()
_reads = 0


def cached(digest: bytes) -> Any:
    """The object cached in this process under ``digest`` (``None``: not cached)."""
    with _lock:
        entry = _loaded.pop(digest, None)
        if entry is None:
            return None
        _loaded[digest] = entry  # most recently used last
        return entry[0]


def keep(digest: bytes, obj: Any, size: int) -> None:
    """Cache ``obj`` (unpickled from ``size`` bytes) in this process under ``digest``."""
    global _loaded_bytes
    with _lock:
        old = _loaded.pop(digest, None)
        if old is not None:
            _loaded_bytes -= old[1]
        while _loaded and (len(_loaded) >= _CACHE_LIMIT or _loaded_bytes + size > _CACHE_BYTES):
            _loaded_bytes -= _loaded.pop(next(iter(_loaded)))[1]
        _loaded[digest] = (obj, size)
        _loaded_bytes += size


def reads() -> int:
    """How many stored objects this process has read from their files (for tests)."""
    return _reads


class Stored:
    """A handle to an object a ``Depot`` stored on this machine (picklable, small).

    Attributes:
        digest: The digest of the object's pickle.
        path: Where the file is opened.
        size: The size of the pickle in bytes.
    """

    __slots__ = ("digest", "path", "size")

    def __init__(self, digest: bytes, path: str, size: int) -> None:
        self.digest = digest
        self.path = path
        self.size = size

    def __reduce__(self) -> tuple[Any, ...]:
        return (Stored, (self.digest, self.path, self.size))

    def __repr__(self) -> str:
        return f"<Stored {self.digest.hex()[:12]} {self.size} bytes at {self.path}>"

    def load(self) -> Any:
        """The stored object, read from its file at the first call in this process.

        Raises:
            RuntimeError: The file cannot be read here, or holds something else now (the
                map that stored it is over).
        """
        obj = cached(self.digest)
        if obj is None:
            obj = cloudpickle.loads(self._read())
            keep(self.digest, obj, self.size)
        return obj

    def _read(self) -> memoryview:
        global _reads
        try:
            # Non-blocking: a descriptor number reused for a pipe must not hang the open.
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        except OSError as exc:
            raise self._unreadable(f"{type(exc).__name__}: {exc}") from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or info.st_size != len(self.digest) + self.size:
                raise self._unreadable("it holds something else now")
            data = _read_all(fd, info.st_size)
        finally:
            os.close(fd)
        view = memoryview(data)
        if view[: len(self.digest)] != self.digest:
            raise self._unreadable("it holds something else now")
        _reads += 1
        return view[len(self.digest) :]

    def _unreadable(self, why: str) -> RuntimeError:
        return RuntimeError(
            f"this worker could not read the map's pipeline and shared inputs from "
            f"{self.path} ({why}); the map that stored them may be over"
        )


def _read_all(fd: int, size: int) -> bytearray:
    data = bytearray(size)
    view = memoryview(data)
    done = 0
    while done < size:
        got = os.readv(fd, [view[done:]])
        if got == 0:
            raise EOFError(f"the file ended after {done} of {size} bytes")
        done += got
    return data


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class Depot:
    """Objects stored once for the workers of one pool, shared by digest while in use.

    One per pool, closed with it. ``put`` returns a ``Stored`` handle (or ``None`` when
    the object is too small to be worth a file, or no file can be written here) and takes
    a reference; ``release`` drops it, and closes the file with the last one.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # digest -> [handle, file descriptor, temporary name (None once unlinked), refs]
        self._files: dict[bytes, list[Any]] = {}
        self.writes = 0  # files written so far (for tests)

    def __repr__(self) -> str:
        return f"<Depot {self.stored} stored>"

    @property
    def stored(self) -> int:
        """How many objects are stored (files open) now."""
        return len(self._files)

    def put(self, digest: bytes, blob: bytes) -> Stored | None:
        """Store ``blob`` (once per digest while in use); ``None`` to send it inline."""
        if len(blob) < STORE_AT_LEAST:
            return None
        with self._lock:
            entry = self._files.get(digest)
            if entry is not None:
                entry[3] += 1
                return entry[0]  # type: ignore[no-any-return]
            try:
                fd, path, name = _write_file(digest, blob)
            except OSError:
                return None  # (no room in /dev/shm, say): the tasks carry the bundle
            handle = Stored(digest, path, len(blob))
            self._files[digest] = [handle, fd, name, 1]
            self.writes += 1
            return handle

    def release(self, handle: Stored) -> None:
        """Drop a reference taken by ``put``; the last one closes the file."""
        with self._lock:
            entry = self._files.get(handle.digest)
            if entry is None or entry[0] is not handle:
                return
            entry[3] -= 1
            if entry[3] > 0:
                return
            del self._files[handle.digest]
        _close(entry[1], entry[2])

    def close(self) -> None:
        """Close every file (the pool is shut down: its workers read no more)."""
        with self._lock:
            entries = list(self._files.values())
            self._files.clear()
        for entry in entries:
            _close(entry[1], entry[2])


def _write_file(digest: bytes, blob: bytes) -> tuple[int, str, str | None]:
    """A file holding ``digest`` then ``blob``: (fd, path for workers, name to unlink)."""
    folder = "/dev/shm" if os.path.isdir("/dev/shm") else None  # memory, not disk
    fd, name = tempfile.mkstemp(prefix="hypernodes-bundle-", dir=folder)
    try:
        _write_all(fd, digest)
        _write_all(fd, blob)
    except BaseException:
        os.close(fd)
        os.unlink(name)
        raise
    proc = f"/proc/{os.getpid()}/fd/{fd}"
    if os.path.exists(proc):
        os.unlink(name)  # reached through our descriptor: gone with it, however we end
        return fd, proc, None
    return fd, name, name  # pragma: no cover - not on Linux


def _close(fd: int, name: str | None) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)
    if name is not None:  # pragma: no cover - not on Linux
        with contextlib.suppress(OSError):
            os.unlink(name)
