"""Node records of a DiskCache directory (what ``explain`` compares a run with): one JSON
file per node in ``<path>/records/``, never unpickled.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from typing import Any

from ._files import EntryFiles
from ._hashing import digest128

__all__ = ["RECORDS", "NodeRecords"]

RECORDS = "records"
"""The subdirectory of node records (not a shard: never scanned for entries)."""


class NodeRecords:
    """The last record of each node, kept in ``<root>/records/``.

    Args:
        files: The entry files of the directory (``files.root``): the first record
            written creates the directory as entries do (mode 0o700).
    """

    def __init__(self, files: EntryFiles) -> None:
        self._files = files
        self._folder = os.path.join(files.root, RECORDS)

    def _file(self, node: str) -> str:
        name = digest128(node.encode("utf-8", "surrogatepass")).hex()
        return os.path.join(self._folder, name + ".json")

    def put(self, node: str, record: dict[str, Any]) -> None:
        """Keep ``record`` as ``node``'s last (written atomically, last writer wins).

        Raises:
            OSError: It cannot be written.
        """
        file = self._file(node)
        folder = os.path.dirname(file)
        if not os.path.isdir(folder):
            self._files.make_root()
            os.makedirs(folder, mode=0o700, exist_ok=True)
        temp = f"{file}.{os.getpid()}.{id(record)}.tmp"
        try:
            with open(temp, "w", encoding="utf-8") as out:
                json.dump({"node": node, **record}, out, separators=(",", ":"))
            os.replace(temp, file)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise

    def get(self, node: str) -> dict[str, Any] | None:
        """``node``'s last record, or ``None`` (also when unreadable)."""
        try:
            with open(self._file(node), encoding="utf-8") as f:
                record = json.load(f)
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) and record.get("node") == node else None

    def clear(self) -> None:
        """Remove every record."""
        shutil.rmtree(self._folder, ignore_errors=True)
