"""Subprocesses: the peers' runner in .venv-peers, fresh-process children in this venv.

Every process started here is waited for; a peer that outlives its timeout is killed
with its whole process group (it was started in a session of its own).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from typing import Any

from .harness import ROOT, RUNNER, Context, Params, Raw
from .peers.peer_common import MARKER

__all__ = ["python_seconds", "run_child", "run_peer", "run_peer_batch"]


def _peer_process(ctx: Context, spec: Any, timeout: float) -> tuple[str, str, int | None]:
    """Run the peers' runner on ``spec``: (stdout, stderr, returncode; None on timeout).

    The child runs with a temporary working directory and no ``PYTHONPATH``, so the peers'
    ``hypernodes`` (0.4.8) is the one imported. On timeout its process group is killed.
    """
    assert ctx.peers_python is not None
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    with tempfile.TemporaryDirectory(prefix="hn-bench-peer-") as cwd:
        proc = subprocess.Popen(
            [ctx.peers_python, str(RUNNER), json.dumps(spec)],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            return out, err, None
    return out, err, proc.returncode


def _results(out: str) -> list[Raw]:
    return [dict(json.loads(ln[len(MARKER) :])) for ln in out.splitlines() if ln.startswith(MARKER)]


def _failure(err: str, out: str, code: int | None) -> Raw:
    tail = (err or out).strip().splitlines()[-1:] or ["no output"]
    return {"status": "error", "note": f"peer process exited {code}: {tail[0]}"[:300]}


def run_peer(ctx: Context, peer: str, workload: str, params: Params, timeout: float) -> Raw:
    """Run ``peer``'s implementation of ``workload`` in a fresh peers-venv process.

    A child still running after ``timeout`` seconds (scaled by ``ctx``) is killed and the
    result says "> timeout".
    """
    if ctx.peers_python is None:
        return {"status": "skipped", "note": "peers not run"}
    timeout *= ctx.peer_timeout_scale
    spec = {"peer": peer, "workload": workload, "params": params}
    out, err, code = _peer_process(ctx, spec, timeout)
    if code is None:
        return {"status": "timeout", "note": f"> {timeout:g} s"}
    got = _results(out)
    return got[-1] if got else _failure(err, out, code)


def run_peer_batch(
    ctx: Context, peer: str, items: list[tuple[str, Params]], timeout: float
) -> list[Raw]:
    """Several ``(workload, params)`` of one peer in one process (``--quick``).

    Saves an interpreter start and a library import per measurement; the price is that
    the measurements share a process. Items not reached before ``timeout`` are timeouts.
    """
    if ctx.peers_python is None:
        return [{"status": "skipped", "note": "peers not run"} for _ in items]
    specs = [{"peer": peer, "workload": w, "params": p} for w, p in items]
    out, err, code = _peer_process(ctx, specs, timeout)
    by_index = {r.pop("index"): r for r in _results(out)}
    missing: Raw = (
        {"status": "timeout", "note": f"> {timeout:g} s (batch)"}
        if code is None
        else _failure(err, out, code)
    )
    return [by_index.get(i, missing) for i in range(len(items))]


def python_seconds(python: str, code: str, *, reps: int, cwd: str | None = None) -> list[float]:
    """Wall-clock seconds of ``python -c code``, ``reps`` times (fresh process each)."""
    import time

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    out = []
    with tempfile.TemporaryDirectory(prefix="hn-bench-py-") as tmp:
        for _ in range(reps):
            t0 = time.perf_counter()
            subprocess.run([python, "-c", code], cwd=cwd or tmp, env=env, check=True)
            out.append(time.perf_counter() - t0)
    return out


def run_child(module: str, *args: str, timeout: float = 600.0) -> Raw:
    """Run ``python -m module args`` in this venv (repo root as cwd) and read its result line.

    Raises:
        RuntimeError: The child failed or printed no result line.
    """
    proc = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(MARKER):
            return dict(json.loads(line[len(MARKER) :]))
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
    raise RuntimeError(f"{module} exited {proc.returncode}: {tail[0]}")
