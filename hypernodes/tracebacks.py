"""What a failure shows: HyperNodes' own frames trimmed from the errors it raises to you.

An error raised out of ``Pipeline.run`` / ``arun`` / ``map`` / ``amap`` has travelled
through the kernel (scheduler, executors, the sync bridge) and often through ``asyncio``,
``concurrent.futures`` and ``threading``: some twenty frames that say nothing about your
code and bury the two that do, the line you called from and the line of your node that
raised. At those entry points :func:`hide_kernel_frames` removes the kernel's frames from
the error and from every exception chained to it (your exception, its ``__cause__``),
keeping your frames, and the standard-library frames your own code called, and adds a
one-line note saying so. Set the environment variable ``HYPERNODES_DEBUG=1`` (read at the
time of the error, so setting ``os.environ`` in a notebook works) to keep every frame.

Only errors HyperNodes raises on purpose (``HyperNodesError``) are trimmed: anything else
escaping the kernel is a bug in it, and its frames are the report.

This module must not import asyncio (``import hypernodes`` stays light): frames are
classified by the name of the module that runs them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from types import TracebackType

__all__ = [
    "DEBUG_ENV",
    "OWN",
    "PLUMB",
    "USER",
    "frame_kind",
    "hide_kernel_frames",
    "kept_frames",
    "kernel_frames_hidden",
]

DEBUG_ENV = "HYPERNODES_DEBUG"

# Top-level packages whose frames are the kernel's own.
_KERNEL = frozenset({"hypernodes"})
# Machinery the kernel runs on: hidden when the kernel called it (or it called the
# kernel), kept when your code called it (your node's own ``asyncio.wait_for``).
_PLUMBING = frozenset(
    {
        "anyio",
        "asyncio",
        "concurrent",
        "contextlib",
        "nest_asyncio",
        "nest_asyncio2",
        "threading",
        "uvloop",
    }
)
USER, PLUMB, OWN = 0, 1, 2
"""Kinds of frames (see :func:`frame_kind`)."""

NOTE = (
    "(HyperNodes hid its own frames from this traceback; set the environment variable "
    f"{DEBUG_ENV}=1 to see them)"
)


def kernel_frames_hidden() -> bool:
    """Whether errors raised to the user lose the kernel's frames (``HYPERNODES_DEBUG`` unset).

    Returns:
        ``False`` when ``HYPERNODES_DEBUG`` is set to anything but ``""``, ``"0"``,
        ``"false"``, ``"no"`` or ``"off"``.
    """
    flag = os.environ.get(DEBUG_ENV, "").strip().lower()
    return flag in ("", "0", "false", "no", "off")


def hide_kernel_frames(exc: BaseException) -> None:
    """Remove the kernel's frames from ``exc`` and the exceptions chained to it, in place.

    Call it where an error leaves the library, then re-raise with a bare ``raise`` (which,
    unlike ``raise exc``, adds no frame for the re-raising function). Does nothing when
    ``HYPERNODES_DEBUG`` is set. Idempotent.
    """
    if not kernel_frames_hidden():
        return
    removed = 0
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        tb, dropped = _trimmed(current.__traceback__)
        if dropped:
            current.__traceback__ = tb
            removed += dropped
        pending += (current.__cause__, current.__context__)
        if isinstance(current, BaseExceptionGroup):
            pending += current.exceptions
    if removed and NOTE not in getattr(exc, "__notes__", ()):
        exc.add_note(NOTE)


def _trimmed(tb: TracebackType | None) -> tuple[TracebackType | None, int]:
    """The traceback without the kernel's frames, and how many were dropped.

    The traceback is rebuilt rather than relinked: its entries are not ours.
    """
    entries: list[TracebackType] = []
    while tb is not None:
        entries.append(tb)
        tb = tb.tb_next
    mask = kept_frames([frame_kind(entry.tb_frame.f_globals.get("__name__")) for entry in entries])
    kept = [entry for entry, keep in zip(entries, mask, strict=True) if keep]
    if len(kept) == len(entries):
        return (entries[0] if entries else None), 0
    rebuilt: TracebackType | None = None
    for entry in reversed(kept):
        rebuilt = TracebackType(rebuilt, entry.tb_frame, entry.tb_lasti, entry.tb_lineno)
    return rebuilt, len(entries) - len(kept)


def kept_frames(kinds: Sequence[int]) -> list[bool]:
    """Which frames of a traceback (by :func:`frame_kind`, oldest first) the user sees.

    The kernel's frames go. A run of plumbing frames goes when it touches a kernel frame
    (the kernel called it, or it called the kernel); between two frames of yours, or at
    an end next to yours, it stays. Nothing goes from a traceback without kernel frames.
    """
    n = len(kinds)
    if OWN not in kinds:
        return [True] * n
    mask = [False] * n
    i = 0
    while i < n:
        j = i + 1
        if kinds[i] == PLUMB:
            while j < n and kinds[j] == PLUMB:
                j += 1
            touches = (i > 0 and kinds[i - 1] == OWN) or (j < n and kinds[j] == OWN)
            if not touches:
                mask[i:j] = [True] * (j - i)
        elif kinds[i] == USER:
            mask[i] = True
        i = j
    return mask


def frame_kind(module: object) -> int:
    """``OWN`` for the kernel's frames, ``PLUMB`` for the machinery it runs on, else
    ``USER``, from the name of the module running the frame (its ``__name__``)."""
    top = module.partition(".")[0] if isinstance(module, str) else ""
    if top in _KERNEL:
        return OWN
    return PLUMB if top in _PLUMBING else USER
