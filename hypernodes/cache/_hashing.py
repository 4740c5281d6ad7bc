"""The 128-bit hash behind fingerprints, code identities and entry checksums.

xxHash's XXH3-128 when the ``xxhash`` package is installed (18 GB/s here, so a 100 MB
array fingerprints in a few milliseconds), else BLAKE2b with a 16-byte digest from the
standard library (about 0.4 GB/s). Both give 128 bits, so accidental collisions are
practically impossible. Neither choice defends against someone crafting collisions on
purpose: a cache key is not a security boundary (see ``DiskCache(secret=...)`` for that).
"""

from __future__ import annotations

import hashlib
from typing import Protocol

__all__ = ["ALGORITHM", "Hasher", "digest128", "new_hasher"]


class Hasher(Protocol):
    """The part of the hashlib / xxhash hasher interface we use."""

    def update(self, data: bytes | bytearray | memoryview, /) -> object: ...

    def digest(self) -> bytes: ...

    def hexdigest(self) -> str: ...


try:
    import xxhash
except ImportError:  # pragma: no cover - exercised in a subprocess by the tests
    ALGORITHM = "blake2b-128"

    def new_hasher() -> Hasher:
        """A fresh 128-bit hasher."""
        return hashlib.blake2b(digest_size=16)

    def digest128(data: bytes | bytearray | memoryview) -> bytes:
        """The 16-byte digest of ``data``."""
        return hashlib.blake2b(data, digest_size=16).digest()

else:
    ALGORITHM = "xxh3-128"
    _xxh3_128 = xxhash.xxh3_128
    _xxh3_128_digest = xxhash.xxh3_128_digest

    def new_hasher() -> Hasher:
        """A fresh 128-bit hasher."""
        return _xxh3_128()

    def digest128(data: bytes | bytearray | memoryview) -> bytes:
        """The 16-byte digest of ``data``."""
        return _xxh3_128_digest(data)
