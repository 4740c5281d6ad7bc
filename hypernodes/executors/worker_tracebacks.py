"""Worker tracebacks on their way home: frames as data, rendered here with the user's files.

A function shipped by value may run in the worker under a code object whose file name is
not the user's (cloudpickle may or may not rewrite it, depending on its version), and a
remote machine may not have the file at all. So the worker sends its frames as plain data,
each with a fingerprint of its code object; this process, which pickled that code (see
``remember``), maps the fingerprint back to the file the code came from and reads the
source line from its own copy (``linecache``: files and notebook cells alike).

This module must not import cloudpickle: it only sees code objects and tracebacks.
"""

from __future__ import annotations

import hashlib
import linecache
import threading
import traceback
import types

from ..tracebacks import frame_kind, kept_frames, kernel_frames_hidden

__all__ = ["Part", "capture", "remember", "render"]

# A frame: file name (as the worker saw it), line number, function name, the source line
# the worker could read ("" if none), the fingerprint of the frame's code object, and its
# kind (the kernel's, plumbing or the user's: see ``hypernodes.tracebacks.frame_kind``).
Frame = tuple[str, int | None, str, str, bytes, int]
# One exception of a chain: the text linking it to the exception printed before it ("" for
# the first), its frames (oldest call first), and its ``format_exception_only`` lines.
Part = tuple[str, tuple[Frame, ...], tuple[str, ...]]

_CAUSE = "\nThe above exception was the direct cause of the following exception:\n\n"
_CONTEXT = "\nDuring handling of the above exception, another exception occurred:\n\n"

# Code fingerprint -> the file the code was defined in, for code this process pickled.
_origins: dict[bytes, str] = {}
_origins_lock = threading.Lock()
_LIMIT = 8192


def fingerprint(code: types.CodeType) -> bytes:
    """What identifies a code object on both sides of a process boundary.

    Built only from what any pickler must carry to rebuild the code (its bytecode, name
    and first line), never from its file name, which a pickler may rewrite.
    """
    h = hashlib.blake2b(code.co_code, digest_size=12)
    h.update(code.co_qualname.encode())
    h.update(code.co_firstlineno.to_bytes(8, "little", signed=True))
    return h.digest()


def remember(code: types.CodeType) -> None:
    """Record where ``code`` came from; called for each code object this process ships."""
    key = fingerprint(code)
    with _origins_lock:
        if key in _origins:
            return
        if len(_origins) >= _LIMIT:
            del _origins[next(iter(_origins))]
        _origins[key] = code.co_filename


def capture(error: BaseException) -> tuple[Part, ...]:
    """``error``'s traceback, with its causes and contexts, as plain picklable data."""
    chain: list[tuple[BaseException, str]] = []
    seen: set[int] = set()
    exc: BaseException | None = error
    link = ""
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        chain.append((exc, link))
        if exc.__cause__ is not None:
            exc, link = exc.__cause__, _CAUSE
        elif exc.__context__ is not None and not exc.__suppress_context__:
            exc, link = exc.__context__, _CONTEXT
        else:
            exc = None
    parts: list[Part] = []
    # Printed oldest first; each exception's link text goes between it and the next one.
    for k in range(len(chain) - 1, -1, -1):
        exc = chain[k][0]
        before = chain[k + 1][1] if k + 1 < len(chain) else ""
        only = tuple(traceback.format_exception_only(type(exc), exc))
        parts.append((before, _frames(exc.__traceback__), only))
    return tuple(parts)


def _frames(tb: types.TracebackType | None) -> tuple[Frame, ...]:
    frames: list[Frame] = []
    for frame, lineno in traceback.walk_tb(tb):
        code = frame.f_code
        line = linecache.getline(code.co_filename, lineno, frame.f_globals).strip()
        kind = frame_kind(frame.f_globals.get("__name__"))
        frames.append((code.co_filename, lineno, code.co_name, line, fingerprint(code), kind))
    return tuple(frames)


def render(parts: tuple[Part, ...]) -> str:
    """The text of a captured traceback, with files and lines mapped back to their origin.

    Unless ``HYPERNODES_DEBUG`` is set, the kernel's frames are left out as they are from
    errors raised in this process (``hypernodes.tracebacks``), and so is an exception of
    the chain that was all kernel (the worker's own ``NodeError`` around your error).
    """
    shown = parts
    if kernel_frames_hidden():
        shown = ()
        for before, frames, only in parts:
            mask = kept_frames([f[5] for f in frames])
            kept = tuple(f for f, keep in zip(frames, mask, strict=True) if keep)
            if frames and not kept:
                continue  # raised by the kernel, about an error already shown
            shown += ((before if shown else "", kept, only),)
        shown = shown or parts
    out: list[str] = []
    for before, frames, only in shown:
        out.append(before)
        if frames:
            out.append("Traceback (most recent call last):\n")
            summary = traceback.StackSummary.from_list([_summary(f) for f in frames])
            out.extend(summary.format())
        out.extend(only)
    return "".join(out)


def _summary(frame: Frame) -> traceback.FrameSummary:
    filename, lineno, name, line, key, _ = frame
    with _origins_lock:
        origin = _origins.get(key)
    if origin is not None:
        # Code we shipped: our copy of its file names the line, whatever the worker saw.
        filename = origin
        line = (linecache.getline(origin, lineno).strip() if lineno else "") or line
    elif not line and lineno:
        line = linecache.getline(filename, lineno).strip()  # the worker had no copy
    return traceback.FrameSummary(filename, lineno, name, lookup_line=False, line=line)
