"""Helpers shared by HyperNodes and the peers: generated workload code, timing, memory.

Stdlib only: this module runs both in the project's venv (imported as
``benchmarks.peers.peer_common``) and in ``.venv-peers`` (imported as ``peer_common`` by
``runner.py``), so every framework times the same functions the same way.
"""

from __future__ import annotations

import atexit
import gc
import importlib.util
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

__all__ = [
    "NotAvailable",
    "async_sources",
    "chain_source",
    "deep",
    "fanin_source",
    "load_module",
    "scratch_dir",
    "map_source",
    "peak_rss_growth",
    "sleep_sources",
    "summarize",
    "time_reps",
]

MARKER = "@@BENCH-RESULT@@"
"""Prefix of the one stdout line a peer subprocess answers with."""


class NotAvailable(Exception):
    """A framework cannot do a workload; the message says why (shown as "n/a")."""


# -- generated workload code -------------------------------------------------------------
# Every function is named after its output (Hamilton requires that; the others accept it),
# annotated with int (Hamilton and pipefunc check annotations), and written to a real file
# so that frameworks hashing source code (caches) can read it.

_MODULE_DIR: Path | None = None


def scratch_dir(prefix: str) -> Path:
    """A new temporary directory, removed when this process exits."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def load_module(name: str, source: str) -> ModuleType:
    """Write ``source`` to a temporary ``name.py``, import it and register it.

    Raises:
        ImportError: The generated source could not be imported.
    """
    global _MODULE_DIR
    if _MODULE_DIR is None:
        _MODULE_DIR = scratch_dir("hn-bench-mod-")
    path = _MODULE_DIR / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import generated module {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def chain_source(n: int, *, sleep: float = 0.0) -> tuple[str, list[str]]:
    """A chain ``v1 = v0 + 1``, ``v2 = v1 + 1`` … ``v{n}``; returns (source, output names)."""
    head = "import time\n\n"
    work = f"    time.sleep({sleep!r})\n" if sleep else ""
    parts = [f"def v{i + 1}(v{i}: int) -> int:\n{work}    return v{i} + 1\n" for i in range(n)]
    return head + "\n\n".join(parts), [f"v{i + 1}" for i in range(n)]


def fanin_source(n: int) -> tuple[str, list[str]]:
    """``w{i} = x + i`` for ``i < n`` and ``total = sum(w…)``; returns (source, names)."""
    parts = [f"def w{i}(x: int) -> int:\n    return x + {i}\n" for i in range(n)]
    params = ", ".join(f"w{i}: int" for i in range(n))
    body = " + ".join(f"w{i}" for i in range(n))
    parts.append(f"def total({params}) -> int:\n    return {body}\n")
    return "\n\n".join(parts), [*(f"w{i}" for i in range(n)), "total"]


def async_sources(n: int, *, chain: bool, sleep: float = 0.0) -> tuple[str, list[str]]:
    """``n`` async nodes: a chain ``a{i+1}(a{i})`` or independent ``o{i}(x)``."""
    head = "import asyncio\n\n"
    wait = f"    await asyncio.sleep({sleep!r})\n" if sleep else ""
    if chain:
        parts = [
            f"async def a{i + 1}(a{i}: int) -> int:\n{wait}    return a{i} + 1\n" for i in range(n)
        ]
        return head + "\n\n".join(parts), [f"a{i + 1}" for i in range(n)]
    parts = [f"async def o{i}(x: int) -> int:\n{wait}    return x + {i}\n" for i in range(n)]
    return head + "\n\n".join(parts), [f"o{i}" for i in range(n)]


def sleep_sources(n: int, seconds: float) -> tuple[str, list[str]]:
    """``n`` independent sync nodes ``s{i}(x)`` that each block in ``time.sleep``."""
    parts = [
        f"def s{i}(x: int) -> int:\n    time.sleep({seconds!r})\n    return x + {i}\n"
        for i in range(n)
    ]
    return "import time\n\n" + "\n\n".join(parts), [f"s{i}" for i in range(n)]


def map_source() -> tuple[str, list[str]]:
    """The trivial 3-node per-item pipeline ``a -> b -> c -> d`` of the map workloads."""
    src = (
        "def b(a: int) -> int:\n    return a + 1\n\n\n"
        "def c(b: int) -> int:\n    return b * 2\n\n\n"
        "def d(c: int) -> int:\n    return c - 1\n\n\n"
        "def y(x: int) -> int:\n    return x + 1\n"
    )
    return src, ["b", "c", "d"]


# -- timing ------------------------------------------------------------------------------


def time_reps(
    fn: Callable[[], Any],
    *,
    reps: int,
    warmup: int = 1,
    budget: float | None = None,
    setup: Callable[[], Any] | None = None,
) -> list[float]:
    """Wall-clock seconds of ``reps`` calls of ``fn`` after ``warmup`` untimed calls.

    ``setup`` (untimed) runs before every call; ``budget`` (seconds) stops early once the
    timed calls have used it up, after at least one rep.
    """
    for _ in range(warmup):
        if setup is not None:
            setup()
        fn()
    gc.collect()
    out: list[float] = []
    spent = 0.0
    for _ in range(reps):
        if setup is not None:
            setup()
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        out.append(dt)
        spent += dt
        if budget is not None and spent >= budget:
            break
    return out


def summarize(values: list[float]) -> dict[str, float]:
    """Median, min and count of a list of measurements."""
    return {"median": statistics.median(values), "min": min(values), "reps": len(values)}


def deep(fn: Callable[[], Any], *, depth: int) -> Any:
    """Call ``fn`` in a thread with a 512 MiB stack and a recursion limit of ``depth``.

    Some frameworks walk a long chain recursively; a user building a 10k-node chain
    would raise the limit the same way. The result (or exception) is passed through.
    """
    import threading

    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = fn()
        except BaseException as exc:
            box["error"] = exc

    old_limit = sys.getrecursionlimit()
    old_stack = threading.stack_size(512 * 2**20)
    sys.setrecursionlimit(max(old_limit, depth))
    try:
        thread = threading.Thread(target=target, name="deep")
        thread.start()
        thread.join()
    finally:
        threading.stack_size(old_stack)
        sys.setrecursionlimit(old_limit)
    if "error" in box:
        raise box["error"]
    return box["result"]


# -- memory ------------------------------------------------------------------------------


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        match = re.search(rf"^{field}:\s+(\d+) kB", fh.read(), re.MULTILINE)
    if match is None:
        raise NotAvailable(f"/proc/self/status has no {field}")
    return int(match.group(1))


def peak_rss_growth(fn: Callable[[], Any]) -> int:
    """Bytes the peak RSS grows while ``fn`` runs (its result is kept alive until measured).

    Resets the kernel's high-water mark first (``/proc/self/clear_refs``), so earlier peaks
    (imports, input construction) do not count.

    Raises:
        NotAvailable: Not on Linux (no ``/proc`` peak-RSS accounting).
    """
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError as exc:
        raise NotAvailable(f"cannot reset the peak RSS here: {exc}") from exc
    before = _status_kib("VmRSS")
    result = fn()
    peak = _status_kib("VmHWM")
    del result
    return (peak - before) * 1024
