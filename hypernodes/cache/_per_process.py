"""One :class:`~._database.Database` per database file and process: made on first use,
kept while a store object holds it, committed at exit, left alone in a forked child."""

from __future__ import annotations

import atexit
import os
import sys
import threading
import warnings
import weakref
from collections.abc import Callable
from typing import Any

from ._database import Database, WriteFailed
from .base import CacheWarning

__all__ = ["database_for", "flush_all"]

_DATABASES: weakref.WeakValueDictionary[str, Database] = weakref.WeakValueDictionary()
_REGISTRY_LOCK = threading.Lock()
_INHERITED: list[Database] = []  # a forked child's copies: never used, never closed
_EXIT_HOOKS: list[int] = []  # the pids that registered the exit flush


def database_for(path: str) -> Database:
    """The process's :class:`Database` for the file ``path`` (made on first request).

    It lives while a store object holds it (or its thread has something to commit).
    """
    db = _DATABASES.get(path)
    if db is not None:
        return db
    with _REGISTRY_LOCK:
        db = _DATABASES.get(path)
        if db is None:
            db = _DATABASES[path] = Database(path)
            _register_exit_flush()
    return db


def flush_all() -> None:
    """Commit what every database of this process has staged (at exit); a failure is a
    warning, as nobody is left to raise to."""
    for db in list(_DATABASES.values()):
        try:
            db.flush(recreate=False)  # a directory removed meanwhile stays removed
        except WriteFailed as exc:
            warnings.warn(
                f"{exc.count} cache entries were lost at exit: {exc.reason}",
                CacheWarning,
                stacklevel=1,
            )


def _register_exit_flush() -> None:
    pid = os.getpid()
    if pid in _EXIT_HOOKS:
        return
    _EXIT_HOOKS.append(pid)
    atexit.register(flush_all)
    # A process that multiprocessing forked leaves through os._exit: no atexit, but
    # multiprocessing's own finalizers run.
    util = sys.modules.get("multiprocessing.util")
    finalize: Callable[..., Any] | None = getattr(util, "Finalize", None)
    if finalize is not None:
        finalize(None, flush_all, exitpriority=100)


def _after_fork_in_child() -> None:
    global _DATABASES, _REGISTRY_LOCK
    # SQLite connections must not be used, nor closed, in a forked child: keep them.
    for db in _DATABASES.values():
        db.inherited = True
        _INHERITED.append(db)
    _DATABASES = weakref.WeakValueDictionary()
    _REGISTRY_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
