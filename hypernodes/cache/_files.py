"""The files of a DiskCache directory: the directory itself (mode 0o700, the warning when
others can write it), entries kept as files (``<key[:2]>/<key>``, written atomically),
their clearing, and which filesystem the directory is on."""

from __future__ import annotations

import contextlib
import os
import re
import stat
import tempfile
import threading
import warnings
from time import monotonic

from ._entry import STALE_TEMP_AGE, remove_stale_temps, write_all
from ._hashing import digest128
from .base import CacheWarning, CacheWriteError

__all__ = [
    "SHARED_FILESYSTEMS",
    "EntryFiles",
    "entry_path",
    "filesystem_type",
    "make_private_dir",
]

_SAFE_KEY = re.compile(r"[0-9A-Za-z_-]{1,128}")
_ENTRY_NAME = re.compile(r"[0-9A-Za-z_-]{1,128}|=[0-9a-f]{32}")
_HASHED_ROW = re.compile(r"=[0-9a-f]{32}")
_SHARD_NAME = re.compile(r"[0-9A-Za-z_-]{1,2}")
_TEMP_PREFIX = ".tmp-"
_WARNED_DIRS: set[str] = set()

SHARED_FILESYSTEMS = frozenset(
    [
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "ncpfs",
        "afs",
        "coda",
        "9p",
        "virtiofs",
        "ceph",
        "glusterfs",
        "lustre",
        "gpfs",
        "beegfs",
        "ocfs2",
        "gfs2",
        "vboxsf",
        "davfs",
        "fuse",
        "fuseblk",
    ]
)
"""Filesystem types on which SQLite's locks and shared memory cannot be trusted (network,
cluster and FUSE filesystems, ``fuse.*`` too): ``layout="auto"`` keeps files there."""


def filesystem_type(path: str) -> str | None:
    """The type of the filesystem holding ``path`` (or the nearest existing parent),
    from ``/proc/self/mountinfo``; ``None`` where that cannot be read (not Linux)."""
    probe = path
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    probe = os.path.realpath(probe)
    best, kind = "", None
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                fields = line.split()
                sep = fields.index("-")
                point = fields[4].replace("\\040", " ")
                inside = probe == point or probe.startswith(point.rstrip("/") + "/")
                if inside and len(point) >= len(best):
                    best, kind = point, fields[sep + 1]
    except (OSError, ValueError, IndexError):
        return None
    return kind


def entry_path(root: str, key: str) -> tuple[str, str]:
    """(shard directory, entry file) for ``key`` in the directory ``root``: the key
    itself when it is a safe file name, else a hash of it, so no key can point outside
    the directory. A database row key of a hashed key (``=`` and 32 hex digits) maps to
    the same file as the key."""
    if _SAFE_KEY.fullmatch(key):
        shard = f"{root}{os.sep}{key[:2]}"
        return shard, f"{shard}{os.sep}{key}"
    if _HASHED_ROW.fullmatch(key):
        hexed = key[1:]
    else:
        hexed = digest128(key.encode("utf-8", "surrogatepass")).hex()
    shard = f"{root}{os.sep}{hexed[:2]}"
    return shard, f"{shard}{os.sep}={hexed}"


def make_private_dir(path: str) -> None:
    """Create the directory ``path`` (mode 0o700) and its parents, unless it exists.

    Raises:
        OSError: It cannot be created (or a file is in the way).
    """
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        if not os.path.isdir(path):
            raise
        return
    os.chmod(path, 0o700)  # the umask may have narrowed it; never widened


class EntryFiles:
    """The directory of one store object, and its entries kept as files.

    Each entry file is written to a temporary file in its shard directory, fsynced and
    renamed over the entry (``os.replace``): readers see the old entry or the new one.
    A writer killed mid-write leaves a temporary file, removed by the next write into
    that directory once nothing has written it for :data:`STALE_TEMP_AGE` seconds.
    """

    def __init__(self, root: str, *, signed: bool) -> None:
        self.root = root
        self.signed = signed
        self._lock = threading.Lock()
        self._made: set[str] = set()
        self._swept: dict[str, float] = {}  # shard -> monotonic time of its last sweep
        self.checked = False

    def file(self, key: str) -> tuple[str, str]:
        """(shard directory, entry file) for ``key`` (see :func:`entry_path`)."""
        return entry_path(self.root, key)

    # -- the directory ------------------------------------------------------------------

    def make_root(self) -> None:
        """Create the directory (mode 0o700) and its parents; warn if others can write it.

        Raises:
            OSError: It cannot be created.
        """
        make_private_dir(self.root)
        if not self.checked:
            self.check_root()

    def check_root(self) -> None:
        """Warn (once per process and directory) when others could plant entries (not
        for signed stores: they refuse what others plant)."""
        self.checked = True
        if os.name == "nt" or self.signed:
            return
        try:
            st = os.stat(self.root)
        except OSError:
            self.checked = False  # not there yet: check when it is
            return
        foreign = hasattr(os, "getuid") and st.st_uid != os.getuid()
        if not (st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) or foreign):
            return
        with self._lock:
            if self.root in _WARNED_DIRS:
                return
            _WARNED_DIRS.add(self.root)
        who = "owned by another user" if foreign else "writable by other users"
        warnings.warn(
            f"cache directory {self.root} is {who} (mode {stat.S_IMODE(st.st_mode):#o}): "
            "entries are pickles, so whoever can write there can run code in this process; "
            f"run `chmod 700 {self.root}`, or use DiskCache(path, secret=...) to sign entries",
            CacheWarning,
            stacklevel=5,
        )

    def _ensure_shard(self, shard: str) -> None:
        if shard in self._made:
            return
        try:
            os.mkdir(shard, 0o700)
        except FileExistsError:
            pass
        except FileNotFoundError:
            self.make_root()
            with contextlib.suppress(FileExistsError):
                os.mkdir(shard, 0o700)
        if not self.checked:
            self.check_root()
        with self._lock:
            self._made.add(shard)

    # -- entries ------------------------------------------------------------------------

    def write(self, key: str, header: bytes, payload: bytes) -> None:
        """Write the entry file of ``key`` atomically (temp file, fsync, ``os.replace``).

        Raises:
            CacheWriteError: The directory or the file cannot be written (nothing is
                left behind).
        """
        shard, file = self.file(key)
        try:
            self._ensure_shard(shard)
            try:
                fd, tmp = tempfile.mkstemp(prefix=_TEMP_PREFIX, dir=shard)
            except FileNotFoundError:  # another store cleared the directory meanwhile
                with self._lock:
                    self._made.discard(shard)
                self._ensure_shard(shard)
                fd, tmp = tempfile.mkstemp(prefix=_TEMP_PREFIX, dir=shard)
        except OSError as exc:
            raise CacheWriteError(key, "bytes", f"cannot create {shard} ({exc})") from exc
        try:
            if self._sweep_due(shard):
                remove_stale_temps(shard, _TEMP_PREFIX, fd, tmp)
            try:
                write_all(fd, header, payload)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, file)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            if isinstance(exc, OSError):
                raise CacheWriteError(key, "bytes", f"cannot write {file} ({exc})") from exc
            raise

    def _sweep_due(self, shard: str) -> bool:
        """Whether to look for stale temporary files in ``shard``: on this store's first
        write there, then whenever any file found fresh then could have gone stale."""
        now = monotonic()
        with self._lock:
            last = self._swept.get(shard)
            if last is not None and now - last < STALE_TEMP_AGE:
                return False
            self._swept[shard] = now
        return True

    def older(self, file: str, limit: float) -> bool:
        """Whether the entry ``file`` was last written before the Unix time ``limit``
        (``False`` when it does not exist).

        Raises:
            OSError: It cannot be looked at.
        """
        try:
            return os.stat(file).st_mtime < limit
        except (FileNotFoundError, NotADirectoryError):
            return False

    def scan(self) -> list[tuple[str, float, int]]:
        """Every entry file: (path, modification time, size)."""
        found: list[tuple[str, float, int]] = []
        try:
            shards = [e for e in os.scandir(self.root) if _SHARD_NAME.fullmatch(e.name)]
        except (FileNotFoundError, NotADirectoryError):
            return found
        for shard in shards:
            with contextlib.suppress(OSError):
                if not shard.is_dir(follow_symlinks=False):
                    continue
                for entry in os.scandir(shard.path):
                    if _ENTRY_NAME.fullmatch(entry.name):
                        with contextlib.suppress(OSError):
                            st = entry.stat(follow_symlinks=False)
                            found.append((entry.path, st.st_mtime, st.st_size))
        return found

    def trim(self, now: float, ttl: float | None, max_bytes: int | None) -> int:
        """Remove the entry files written more than ``ttl`` seconds before ``now``, then
        the oldest while they take more than ``max_bytes``; how many were removed."""
        files = sorted(self.scan(), key=lambda f: f[1])
        removed = 0
        total = sum(size for _, _, size in files)
        for path, mtime, size in files:
            expired = ttl is not None and mtime < now - ttl
            if not expired and (max_bytes is None or total <= max_bytes):
                break  # sorted by age: no later file is expired either
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
                removed += 1
            total -= size
        return removed

    def clear(self) -> None:
        """Remove every entry file and stray temporary file; other files stay."""
        try:
            shards = [e for e in os.scandir(self.root) if _SHARD_NAME.fullmatch(e.name)]
        except (FileNotFoundError, NotADirectoryError):
            shards = []
        for shard in shards:
            if not shard.is_dir(follow_symlinks=False):
                continue
            for entry in os.scandir(shard.path):
                name = entry.name
                if _ENTRY_NAME.fullmatch(name) or name.startswith(_TEMP_PREFIX):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.path)
            # Left in place when not empty: someone else's files, or a concurrent writer.
            with contextlib.suppress(OSError):
                os.rmdir(shard.path)
        with self._lock:
            self._made.clear()
            self._swept.clear()
