"""The end of a run, seen wherever a body would start: one ``Halt`` per top-level run.

A run is over once it failed or was cancelled; from then on nothing of it starts, not a
node body, a map item or a nested run. The run's ``Halt`` travels down the run in its
scopes, and every place about to start something checks it right before:

- on the event loop (a step, an item): a halted one waits for the cancellation that ended
  the run (``Halt.halted``), so that the caller sees that failure or cancel, not a stop;
- sync code between bodies (a segment of steps or a chunk of items, in a worker thread or
  inline on a loop of ours) raises ``Halted`` instead of starting the next body; inline, a
  cancel asked of the running task (Ctrl-C) also counts (``Halt.inline``);
- a call handed to a worker that finds its run over, before it starts or between its
  bodies, answers ``Skipped`` (``run_unless_over``), and its caller waits as above. In
  another process or on a cluster, the run's ``Ticket`` travels with each task and reads
  the run's mark on a board that every local process can map (a small file); a worker that
  cannot open the board (another machine) runs what it receives.

A run started inside a body (a node calling ``pipeline.run()``, a shipped map item's
sub-run) follows the run of that body: it stops when that run is over, while its own end
does not end the enclosing run.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import contextvars
import itertools
import mmap
import os
import tempfile
import threading
from collections.abc import Callable
from typing import Any, NoReturn

__all__ = [
    "Halt",
    "Halted",
    "InlineStop",
    "Skipped",
    "Ticket",
    "check_enclosing",
    "enclosing",
    "following",
    "new_halt",
    "run_unless_over",
]


class Halted(asyncio.CancelledError):
    """Raised instead of starting a body whose run is over: a cancellation, not a failure."""


class Skipped:
    """What a shipped task returns instead of a result when its run was over."""

    __slots__ = ()


class Ticket:
    """A run's mark on the board, sent with its shipped tasks (picklable).

    Attributes:
        path: Where other processes open the board.
        board: The board's id.
        serial: The run's number on the board.
    """

    __slots__ = ("board", "path", "serial")

    def __init__(self, path: str, board: int, serial: int) -> None:
        self.path = path
        self.board = board
        self.serial = serial

    def __reduce__(self) -> tuple[Any, ...]:
        return (Ticket, (self.path, self.board, self.serial))

    @property
    def over(self) -> bool:
        """Whether the run was marked over (``False`` where the board cannot be read)."""
        view = _view(self)
        return view is not None and view[1 + self.serial % SLOTS] == self.serial

    def marks(self) -> tuple[memoryview, int] | None:
        """Where the run's mark lands: ``(view, slot)``, the run being over once
        ``view[slot] == serial`` (``over`` without its lookups, for a loop that checks
        before every item); ``None`` where the board cannot be read."""
        view = _view(self)
        return None if view is None else (view, 1 + self.serial % SLOTS)


class Halt:
    """The "run is over" signal of one top-level run, shared by all its levels.

    Attributes:
        over: Whether the run is over (any thread may read it).
        abandoned: What the run had handed to workers when the calls waiting for it were
            cancelled (see ``abandon``).
        unheard: Bodies of the run that failed in a worker thread and whose failure the
            loop has not taken in yet: meanwhile the run's calls waiting in a thread pool's
            queue do not start (the failure may end the run, see ``workers``).
    """

    __slots__ = ("_ticket", "abandoned", "over", "unheard")

    def __init__(self) -> None:
        self.over = False
        self.abandoned: list[str] = []
        self.unheard = 0
        self._ticket: Ticket | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {'over' if self.over else 'running'}>"

    def set(self) -> None:
        """Mark the run over, here and for the workers its tasks went to (idempotent)."""
        self.over = True
        ticket = self._ticket
        if ticket is not None:
            _mark(ticket)

    def ticket(self) -> Ticket | None:
        """This run's mark on the board, for tasks shipped to other processes (made once;
        ``None`` when no board can be made here)."""
        ticket = self._ticket
        if ticket is None:
            ticket = self._ticket = _new_ticket()
            if ticket is not None and self.over:
                _mark(ticket)
        return ticket

    def abandon(self, label: str) -> None:
        """Note a call handed to a worker whose result is no longer awaited: it runs on
        there (a body cannot be interrupted), or is skipped if it had not started."""
        self.abandoned.append(label)

    def report(self) -> str | None:
        """What the run left running in its workers, in words (``None``: nothing)."""
        if not self.abandoned:
            return None
        listed = ", ".join(dict.fromkeys(self.abandoned))
        return (
            f"abandoned when the run ended: {listed} (sync work already handed to a "
            "worker cannot be interrupted; it finishes there, or is skipped if it had not "
            "started, and its results are dropped)"
        )

    def inline(self) -> InlineStop:
        """What sync code running inline on this loop's thread checks between bodies."""
        return InlineStop(self)

    def probe(self) -> tuple[Halt, Callable[[], int] | None, int]:
        """``over`` in parts, for the innermost loops: ``halt.over or (cancelling is not
        None and cancelling() > base)`` (see ``InlineStop``)."""
        return self, None, 0

    async def halted(self) -> NoReturn:
        """Stop a step or item of this run that found the run over.

        The failure or cancel that ended the run reaches every task of the run: wait here
        for it, so that it (not a stop of ours) is what the caller sees. A stop asked by
        inline code for its task's cancel request is that cancellation, raised at once.

        Raises:
            asyncio.CancelledError: The cancellation, when it comes.
        """
        if not self.over:
            raise asyncio.CancelledError
        await asyncio.get_running_loop().create_future()  # never set: only cancelled
        raise AssertionError("unreachable")  # pragma: no cover


class _Following(Halt):
    """The halt of a run started inside a body: over with its own run, or when the run of
    that body is."""

    __slots__ = ("_outer", "_own")

    def __init__(self, outer: Halt | Ticket) -> None:
        self._outer = outer
        self._own = False
        super().__init__()

    @property
    def over(self) -> bool:
        return self._own or self._outer.over

    @over.setter
    def over(self, value: bool) -> None:
        self._own = value

    async def halted(self) -> NoReturn:
        """Like ``Halt.halted``, but when the enclosing run is over nothing may cancel this
        run's tasks: ``Halted`` ends it, up to the body that started it.

        Raises:
            asyncio.CancelledError: ``Halted``, or the cancellation of this run.
        """
        if self._outer.over:
            raise Halted
        await super().halted()


class InlineStop:
    """``over`` for sync code running inline on a loop of ours, between its bodies: the run
    is over, or a cancel was asked of the task running it since this stop was made (Ctrl-C
    cancels the task, but inline code only sees it here)."""

    __slots__ = ("_base", "_halt", "_task")

    def __init__(self, halt: Halt) -> None:
        self._halt = halt
        self._task = asyncio.current_task()
        self._base = self._task.cancelling() if self._task is not None else 0

    @property
    def over(self) -> bool:
        """Whether the next body must not start."""
        task = self._task
        return self._halt.over or (task is not None and task.cancelling() > self._base)

    def set(self) -> None:
        """Mark the run over (see ``Halt.set``)."""
        self._halt.set()

    def probe(self) -> tuple[Halt, Callable[[], int] | None, int]:
        """See ``Halt.probe``."""
        task = self._task
        return self._halt, (task.cancelling if task is not None else None), self._base


# -- runs inside bodies ----------------------------------------------------------------

# The run whose body is running in this context (set around bodies in worker threads and
# around shipped tasks in workers): a run started here follows it.
_enclosing: contextvars.ContextVar[Halt | Ticket | None] = contextvars.ContextVar(
    "hypernodes_enclosing_run", default=None
)


def new_halt() -> Halt:
    """The halt of a new top-level run (following the run of the body that started it)."""
    outer = _enclosing.get()
    return Halt() if outer is None else _Following(outer)


def item_halt(outer: Halt) -> Halt:
    """The halt of one item of a map that keeps going past failures: over when the item
    failed (nothing more of that item starts), or when the map's run is over."""
    return _Following(outer)


def following(outer: Halt | Ticket | None, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` as a body of the run ``outer``: runs it starts follow that run."""
    token = _enclosing.set(outer)
    try:
        return fn(*args)
    finally:
        _enclosing.reset(token)


def enclosing() -> Halt | Ticket | None:
    """The run whose body is running in this context (see ``following``), if any."""
    return _enclosing.get()


def check_enclosing() -> None:
    """Call right before a body starts, after any slow loading: stop if the run that sent
    it (see ``following``) is over by now.

    Raises:
        Halted: That run is over.
    """
    outer = _enclosing.get()
    if outer is not None and outer.over:
        raise Halted


def run_unless_over(run: Halt | Ticket | None, fn: Callable[..., Any], *args: Any) -> Any:
    """The worker side of a call (a worker thread, process or cluster task): ``fn(*args)``
    as a body of ``run``, unless that run is over.

    A stop comes back as a value, never as ``Halted``: on the loop, a ``CancelledError``
    settling the awaited future would pass for the delivery of a cancel that the task
    may also have been asked for, and swallow it.

    Returns:
        ``fn``'s result, or ``Skipped`` when the run was over before ``fn`` started, or
        before a body inside it did (a segment of steps, a chunk of items, a sub-run).
    """
    if run is None:
        return fn(*args)
    if run.over:
        return Skipped()
    try:
        return following(run, fn, *args)
    except asyncio.CancelledError as exc:
        # (A sub-run stopped this way ends as a cancelled task: Halted is its context.)
        if isinstance(exc, Halted) or isinstance(exc.__context__, Halted):
            return Skipped()
        raise


# -- the board -------------------------------------------------------------------------

SLOTS = 4096
"""Slots on a board. A run marks slot ``1 + serial % SLOTS``; a slot is reused only after
4096 later runs shipped work, so a worker reading a mark is never misled for long (at
worst a task of a long-finished run, still in transit, runs instead of being skipped).
Slot 0 holds the board's random id, which tickets carry."""

_SIZE = 8 * (SLOTS + 1)
_lock = threading.Lock()
_board: _Board | None = None


class _Board:
    """This process's marks of runs that are over, in a file every local process can map.

    One per process (like a file it keeps open), not per run: runs hold tickets on it. On
    Linux the file is unlinked at once and reached through ``/proc/<pid>/fd/<fd>``, so
    nothing is left behind however this process ends (a SIGKILL included); elsewhere it is
    removed at exit.
    """

    def __init__(self) -> None:
        folder = "/dev/shm" if os.path.isdir("/dev/shm") else None  # memory, not disk
        fd, name = tempfile.mkstemp(prefix="hypernodes-runs-", dir=folder)
        try:
            os.ftruncate(fd, _SIZE)
            self._map = mmap.mmap(fd, _SIZE)
        except BaseException:
            os.close(fd)
            os.unlink(name)
            raise
        self.pid = os.getpid()
        self.view = memoryview(self._map).cast("q")
        self.id = self.view[0] = int.from_bytes(os.urandom(7), "little") or 1
        self.serials = itertools.count(1)
        proc = f"/proc/{self.pid}/fd/{fd}"
        if os.path.exists(proc):
            os.unlink(name)
            self._fd: int | None = fd  # kept open: workers open the file through it
            self.path = proc
        else:  # pragma: no cover - not on Linux
            os.close(fd)
            self._fd = None
            self.path = name
            atexit.register(_remove, name, self.pid)


def _remove(path: str, pid: int) -> None:  # pragma: no cover - not on Linux
    if os.getpid() == pid:  # not in a forked child
        with contextlib.suppress(OSError):
            os.unlink(path)


def _new_ticket() -> Ticket | None:
    global _board
    with _lock:
        board = _board
        if board is None or board.pid != os.getpid():  # a forked child makes its own
            try:
                board = _board = _Board()
            except OSError:
                return None
        return Ticket(board.path, board.id, next(board.serials))


def _mark(ticket: Ticket) -> None:
    board = _board
    if board is not None and board.id == ticket.board and board.pid == os.getpid():
        board.view[1 + ticket.serial % SLOTS] = ticket.serial


# Boards as seen by this process (None: cannot be opened here), by path.
_views: dict[str, memoryview | None] = {}


def _view(ticket: Ticket) -> memoryview | None:
    view = _views.get(ticket.path)
    if view is not None and view[0] == ticket.board:
        return view
    if view is None and ticket.path in _views:
        return None
    board = _board
    if board is not None and board.id == ticket.board:
        view = board.view  # a task run by the process that sent it (an in-process pool)
    else:
        try:
            with open(ticket.path, "rb") as file:
                mapped = mmap.mmap(file.fileno(), _SIZE, access=mmap.ACCESS_READ)
            view = memoryview(mapped).cast("q")
        except (OSError, ValueError):
            view = None
        if view is not None and view[0] != ticket.board:
            view = None  # another board at that path now (its process ended)
    with _lock:
        if len(_views) >= 64:
            _views.pop(next(iter(_views)))
        _views[ticket.path] = view
    return view
