"""One DiskCache entry on disk: its format (header, checksum or HMAC, pickle payload),
the low-level reads and writes of its file, and the removal of stale temporary files.

Layout (little-endian)::

    magic  b"HNDC"          4 bytes
    version                 1 byte   (FORMAT_VERSION)
    kind                    1 byte   0: checksum, 1: HMAC-SHA256 signed
    algorithm               1 byte   checksum hash (1: xxh3-128, 2: blake2b-128); 0 if signed
    reserved                1 byte   0
    payload length          8 bytes
    digest                  16 bytes (checksum) or 32 bytes (HMAC-SHA256), either of
                                     the key, the 16 header bytes above and the payload
    payload                 pickle protocol 5

Readers check every field: a short file is truncated, a wrong magic is not an entry, a
bad checksum is corruption (or an entry of another key copied under this key's name: the
checksum covers the key, so it is refused like a signed one), a bad HMAC is tampering (or
another secret). Entries of an older format version (1: its checksum left the key out)
are outdated, a plain miss that the next write replaces; of a newer one, a problem.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import struct
from typing import Any

from ._hashing import ALGORITHM, new_hasher

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "INLINE_MAX",
    "NOWAIT",
    "STALE_TEMP_AGE",
    "WOULD_BLOCK",
    "CorruptEntry",
    "OutdatedEntry",
    "decode",
    "encode_header",
    "read_file",
    "read_file_nowait",
    "remove_stale_temps",
    "write_all",
]

MAGIC = b"HNDC"
FORMAT_VERSION = 2
_HEAD = struct.Struct("<4sBBBBQ")
_CHECKSUM, _SIGNED = 0, 1
_ALGORITHMS = {"xxh3-128": 1, "blake2b-128": 2}
_ALGORITHM_ID = _ALGORITHMS[ALGORITHM]
_DIGEST_SIZE = {_CHECKSUM: 16, _SIGNED: 32}
_PLAIN_PREFIX = MAGIC + bytes([FORMAT_VERSION, _CHECKSUM, _ALGORITHM_ID, 0])
_PLAIN_START = _HEAD.size + 16
_LENGTH = struct.Struct("<Q")
_BAD_CHECKSUM = (
    "fails its checksum (the file is corrupt, or is the entry of another key copied under "
    "this key's name)"
)


class CorruptEntry(Exception):
    """An entry that must not be trusted; the message says why (e.g. "is truncated")."""


class OutdatedEntry(CorruptEntry):
    """An entry in an older format: not a problem, a miss (the next write replaces it)."""


def _mac(secret: bytes, key: str, head: bytes | memoryview, payload: bytes | memoryview) -> bytes:
    mac = hmac.new(secret, key.encode("utf-8", "surrogatepass"), hashlib.sha256)
    mac.update(head)
    mac.update(payload)
    return mac.digest()


def _checksum(key: str, head: bytes | memoryview, payload: bytes | memoryview) -> bytes:
    # What the HMAC covers, so an entry is only ever valid under its own key.
    h = new_hasher()
    name = key.encode("utf-8", "surrogatepass")
    h.update(_LENGTH.pack(len(name)) + name)
    h.update(head)
    h.update(payload)
    return h.digest()


def encode_header(key: str, payload: bytes, secret: bytes | None) -> bytes:
    """The bytes to write before ``payload`` for ``key``."""
    if secret is None:
        head = _HEAD.pack(MAGIC, FORMAT_VERSION, _CHECKSUM, _ALGORITHM_ID, 0, len(payload))
        return head + _checksum(key, head, payload)
    head = _HEAD.pack(MAGIC, FORMAT_VERSION, _SIGNED, 0, 0, len(payload))
    return head + _mac(secret, key, head, payload)


def decode(key: str, data: object, secret: bytes | None) -> memoryview:
    """The verified payload of an entry read from disk.

    Raises:
        OutdatedEntry: The entry was written in an older format version.
        CorruptEntry: The entry is not bytes, is empty, truncated, not an entry, from a
            newer format version, fails its checksum (corrupt, or another key's entry),
            or its signature does not match ``secret``.
    """
    if not isinstance(data, bytes | bytearray):  # a value of another type in a database row
        raise CorruptEntry(f"is not an entry (a {type(data).__name__} where bytes belong)")
    size = len(data)
    if (  # the common case, checked with as few Python operations as possible
        secret is None
        and data[:8] == _PLAIN_PREFIX
        and size == _PLAIN_START + _LENGTH.unpack_from(data, 8)[0]
    ):
        view = memoryview(data)
        payload = view[_PLAIN_START:]
        if view[_HEAD.size : _PLAIN_START] == _checksum(key, view[: _HEAD.size], payload):
            return payload
        raise CorruptEntry(_BAD_CHECKSUM)
    if size < _HEAD.size:
        raise CorruptEntry("is empty" if size == 0 else f"is truncated ({size} bytes)")
    magic, version, kind, algorithm, _, length = _HEAD.unpack_from(data)
    if magic != MAGIC:
        raise CorruptEntry("is not a HyperNodes cache entry (bad magic bytes)")
    if version < FORMAT_VERSION:
        raise OutdatedEntry(f"was written in format version {version}")
    if version != FORMAT_VERSION:
        raise CorruptEntry(
            f"was written in format version {version}, this reader needs {FORMAT_VERSION}"
        )
    digest_size = _DIGEST_SIZE.get(kind)
    if digest_size is None:
        raise CorruptEntry(f"has an unknown entry kind {kind}")
    start = _HEAD.size + digest_size
    if size != start + length:
        what = "is truncated" if size < start + length else "has trailing bytes"
        raise CorruptEntry(f"{what} ({size} bytes, expected {start + length})")
    view = memoryview(data)
    digest = view[_HEAD.size : start]
    payload = view[start:]
    if kind == _SIGNED:
        if secret is None:
            raise CorruptEntry("is signed, but this DiskCache has no secret to check it")
        if not hmac.compare_digest(digest, _mac(secret, key, view[: _HEAD.size], payload)):
            raise CorruptEntry(
                "has a signature that does not match (tampered with, or written with "
                "another secret)"
            )
        return payload
    if secret is not None:
        raise CorruptEntry("is not signed, but this DiskCache only trusts signed entries")
    if algorithm != _ALGORITHM_ID:
        names = {v: k for k, v in _ALGORITHMS.items()}
        raise CorruptEntry(
            f"has a {names.get(algorithm, '?')} checksum, which this process cannot check "
            "(pip install xxhash)"
        )
    if digest != _checksum(key, view[: _HEAD.size], payload):
        raise CorruptEntry(_BAD_CHECKSUM)
    return payload


# -- reading and writing files ---------------------------------------------------------

_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
_FIRST_READ = 1 << 16
INLINE_MAX = 1 << 20  # entries up to this size may be read on the event loop
NOWAIT = getattr(os, "RWF_NOWAIT", None) if hasattr(os, "preadv") else None
WOULD_BLOCK: Any = object()


def read_file(path: str) -> bytes | bytearray | None:
    """The whole file, or ``None`` when it does not exist."""
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        first = os.read(fd, _FIRST_READ)
        if len(first) < _FIRST_READ:
            return first
        size = os.fstat(fd).st_size
        buf = bytearray(max(size, len(first)))
        buf[: len(first)] = first
        view, pos = memoryview(buf), len(first)
        while pos < size:
            n = os.readv(fd, [view[pos:]])
            if n == 0:
                break
            pos += n
        return buf if pos == len(buf) else buf[:pos]
    finally:
        os.close(fd)


def read_file_nowait(path: str) -> bytes | bytearray | None:
    """Like :func:`read_file`, but only from the page cache: ``WOULD_BLOCK`` when the
    data would have to come from the disk (or the file is large)."""
    if NOWAIT is None:
        return WOULD_BLOCK  # type: ignore[no-any-return]
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError:
        return WOULD_BLOCK  # type: ignore[no-any-return]  # the thread path reports it
    try:
        size = os.fstat(fd).st_size
        if size > INLINE_MAX:
            return WOULD_BLOCK  # type: ignore[no-any-return]
        buf = bytearray(size)
        if size and os.preadv(fd, [buf], 0, NOWAIT) != size:
            return WOULD_BLOCK  # type: ignore[no-any-return]
        return buf
    except OSError:  # BlockingIOError (not in RAM), EOPNOTSUPP (filesystem says no), ...
        return WOULD_BLOCK  # type: ignore[no-any-return]
    finally:
        os.close(fd)


def write_all(fd: int, *chunks: bytes) -> None:
    for chunk in chunks:
        view = memoryview(chunk)
        while view:
            view = view[os.write(fd, view) :]


STALE_TEMP_AGE = 15 * 60.0
"""Seconds without a write after which a temporary file is left over by a dead writer.

A live writer writes its temporary file, fsyncs it and renames it within seconds, so a
file untouched this long has no writer left; one stalled longer (a process paused for
that long) loses its write, which then fails like any failed write (nothing is corrupted).
"""


def remove_stale_temps(directory: str, prefix: str, fd: int, own: str) -> None:
    """Remove the temporary files (names starting with ``prefix``) in ``directory`` that
    nothing has written to for :data:`STALE_TEMP_AGE` seconds: those of killed writers.

    ``fd`` and ``own`` are the caller's own temporary file, just created. Best effort:
    errors are ignored, so a write never fails because of the sweep.
    """
    with contextlib.suppress(OSError), os.scandir(directory) as entries:
        # Our new file's mtime is "now" by the filesystem's clock (another machine's, on
        # a network filesystem): other files are judged by that clock, not by ours.
        limit = os.fstat(fd).st_mtime - STALE_TEMP_AGE
        for entry in entries:
            if not entry.name.startswith(prefix) or entry.path == own:
                continue
            # Gone already: renamed by its writer, or removed by another sweep.
            with contextlib.suppress(OSError):
                if entry.stat(follow_symlinks=False).st_mtime < limit:
                    os.unlink(entry.path)
