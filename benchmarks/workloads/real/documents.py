"""Issue 14, documents through a disk cache: tokenize -> embed (numpy) -> score -> label.

A map over ``docs`` documents, three runs per repetition in one process: no cache, a
``DiskCache`` in a fresh directory (cold), and a rerun over that directory through a new
``DiskCache`` object (warm); the figures are each run's time over the no-cache run's, taken
repetition by repetition. The yardstick is the same work written by hand, with and
without a cache of one pickle file per document (atomic ``os.replace``, no fsync).

Each timed run starts from a collected heap (``gc.collect()`` first, on both sides): the
results of the runs before it are alive, and which run happens to pay the collections
their garbage makes due (a walk of every result list, 30-60 ms) would otherwise depend
on how many objects everything before it allocated, not on the run itself.

The cache directory is on the disk that holds the repository, never on tmpfs (the
note says which filesystem). Every run's labels and scores are checked, and the node
calls are counted: a cold run computes every node of every item, a warm one none.
"""

from __future__ import annotations

import gc
import hashlib
import itertools
import os
import pickle
import random
import shutil
import statistics
import tempfile
import time
import zlib
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from hypernodes import DiskCache, Node, Pipeline

from ...harness import ROOT, Context

__all__ = ["describe", "hand_documents", "hn_documents"]

BUCKETS = 4096
DIM = 64
WORDS_PER_DOC = 1000

CALLS: Counter[str] = Counter()
"""Node calls, by node: proves what a cached run computed."""

_TABLES: dict[str, np.ndarray] = {}


def _vectors() -> np.ndarray:
    """The token-bucket embedding table and the query vector (deterministic)."""
    table = _TABLES.get("table")
    if table is None:
        rng = np.random.default_rng(14)
        table = _TABLES["table"] = rng.standard_normal((BUCKETS + 1, DIM)).astype(np.float32)
    return table


def tokenize(text: str) -> list[str]:
    CALLS["tokenize"] += 1
    return [w.strip(".,;:!?") for w in text.lower().split() if len(w) > 2]


def embed(tokens: list[str]) -> np.ndarray:
    """A bag of hashed unigrams and bigrams through a fixed table (no BLAS: no threads)."""
    CALLS["embed"] += 1
    grams = tokens + [f"{a} {b}" for a, b in itertools.pairwise(tokens)]
    x = _vectors()[[zlib.crc32(g.encode()) % BUCKETS for g in grams]]
    vec = np.tanh(x).mean(axis=0) + 0.5 * np.sin(x).mean(axis=0)
    return vec / (float(np.linalg.norm(vec)) + 1e-9)  # type: ignore[no-any-return]


def score(embedding: np.ndarray) -> float:
    CALLS["score"] += 1
    return float(embedding @ _vectors()[BUCKETS])


def label(score: float) -> str:
    CALLS["label"] += 1
    return "relevant" if score > 0.05 else "other"


def make_docs(n: int) -> list[str]:
    """``n`` distinct deterministic documents of ``WORDS_PER_DOC`` words."""
    rng = random.Random(14)
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = ["".join(rng.choices(letters, k=rng.randint(2, 10))) for _ in range(5000)]
    return [f"doc {i}. " + " ".join(rng.choices(vocab, k=WORDS_PER_DOC)) for i in range(n)]


def _scratch() -> tuple[Path, str]:
    """A directory for caches on the repository's disk, and its filesystem type."""
    base = Path(tempfile.gettempdir())
    if os.stat(base).st_dev != os.stat(ROOT).st_dev:
        base = ROOT / ".bench-scratch"
        base.mkdir(exist_ok=True)
    fstype, best = "?", ""
    with open("/proc/mounts") as fh:  # the longest mount point holding ``base``
        for line in fh:
            _, point, kind = line.split()[:3]
            if str(base.resolve()).startswith(point) and len(point) > len(best):
                fstype, best = kind, point
    return base, fstype


def _check(results: list[dict[str, Any]], expected: list[tuple[float, str]], run: str) -> None:
    got = [(round(float(r["score"]), 5), r["label"]) for r in results]
    if got != expected:
        bad = sum(g != e for g, e in zip(got, expected, strict=False)) + abs(
            len(got) - len(expected)
        )
        raise AssertionError(f"{run}: {bad} of {len(expected)} documents got a wrong result")


def _computed(before: Counter[str]) -> int:
    return sum((CALLS - before).values())


def _measure(
    docs: list[str],
    reps: int,
    nocache: Callable[[], list[dict[str, Any]]],
    cached: Callable[[Path], list[dict[str, Any]]],
) -> dict[str, Any]:
    scores = [score(embed(tokenize(d))) for d in docs]
    expected = [(round(s, 5), label(s)) for s in scores]
    base, fstype = _scratch()
    _check(nocache(), expected, "warm-up")
    raw: dict[str, list[float]] = {k: [] for k in ("nocache", "cold", "warm")}
    for _ in range(reps):
        root = Path(tempfile.mkdtemp(prefix="hn-bench-docs-", dir=base))
        try:
            times = {}
            for run, call in (
                ("nocache", nocache),
                ("cold", lambda r=root: cached(r)),
                ("warm", lambda r=root: cached(r)),
            ):
                before = CALLS.copy()
                gc.collect()  # (each run pays for its own garbage, not the last run's)
                t0 = time.perf_counter()
                out = call()
                times[run] = time.perf_counter() - t0
                _check(out, expected, run)
                computed, want = _computed(before), {"warm": 0}.get(run, 4 * len(docs))
                if computed != want:
                    raise AssertionError(f"{run} run computed {computed} nodes, expected {want}")
            if not any(root.iterdir()):
                raise AssertionError("the cold run wrote nothing to the cache directory")
        finally:
            shutil.rmtree(root, ignore_errors=True)
        for run, seconds in times.items():
            raw[run].append(seconds)
    raw["cold_ratio"] = [c / n for c, n in zip(raw["cold"], raw["nocache"], strict=True)]
    raw["warm_ratio"] = [w / n for w, n in zip(raw["warm"], raw["nocache"], strict=True)]
    note = "" if fstype not in ("tmpfs", "ramfs", "?") else f"cache dir on {fstype}!"
    return {"raw": raw, "note": note or f"cache on {fstype}"}


def _pipeline(cache: DiskCache | None) -> Pipeline:
    return Pipeline(
        [
            Node(tokenize, output_name="tokens"),
            Node(embed, output_name="embedding"),
            Node(score, output_name="score"),
            Node(label, output_name="label"),
        ],
        cache=cache,
    )


def hn_documents(ctx: Context, *, docs: int, reps: int) -> dict[str, Any]:
    """HyperNodes: ``map`` over the documents, sequential engine, ``DiskCache`` or none."""
    texts = make_docs(docs)
    plain = _pipeline(None)

    def cached(root: Path) -> list[dict[str, Any]]:
        return _pipeline(DiskCache(root)).map({"text": texts}, map_over="text")

    return _measure(texts, reps, lambda: plain.map({"text": texts}, map_over="text"), cached)


_CODE_VERSION = "tokenize-embed-score-label v1"


def _by_hand(texts: list[str], root: Path | None) -> list[dict[str, Any]]:
    """The loop one would write: one pickle file per document, keyed by a hash of it."""
    out = []
    for text in texts:
        path = None
        if root is not None:
            key = hashlib.sha256(f"{_CODE_VERSION}\0{text}".encode()).hexdigest()
            path = root / key
            try:
                with open(path, "rb") as fh:
                    out.append(pickle.load(fh))
                continue
            except FileNotFoundError:
                pass
        tokens = tokenize(text)
        embedding = embed(tokens)
        s = score(embedding)
        result = {"tokens": tokens, "embedding": embedding, "score": s, "label": label(s)}
        if path is not None:
            tmp = path.with_name(path.name + ".tmp")
            with open(tmp, "wb") as fh:
                pickle.dump(result, fh, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(tmp, path)
        out.append(result)
    return out


def hand_documents(ctx: Context, *, docs: int, reps: int) -> dict[str, Any]:
    """By hand: a loop over the documents, a pickle file per document or no cache."""
    texts = make_docs(docs)
    return _measure(texts, reps, lambda: _by_hand(texts, None), lambda r: _by_hand(texts, r))


def describe(raw: dict[str, Any]) -> str:
    """Median seconds of the three runs behind the ratios."""
    if not raw.get("nocache"):
        return ""
    med = {k: statistics.median(raw[k]) for k in ("nocache", "cold", "warm")}
    return f"no cache {med['nocache']:.3f} s, cold {med['cold']:.3f} s, warm {med['warm']:.3f} s"
