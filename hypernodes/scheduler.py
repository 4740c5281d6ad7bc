"""The eager scheduler: the only code that awaits nodes (plans are compiled in plan.py).

Running a plan:

- sequentially (the default): nodes in a deterministic topological order, one at a time.
  Consecutive plain sync nodes form one segment that runs in a single call: inline on a
  loop HyperNodes owns, or as one hop to a worker thread on a loop the user owns;
- concurrently: dependency counters; when a node finishes, the children it made ready
  start at once (the first continues in the same task, the rest in new tasks). No polling,
  no level-by-level waves.

The first failure cancels the rest and surfaces as one ``NodeError``.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections import deque
from typing import Any, NoReturn

from .errors import NodeError, PathFrame, node_failed
from .executors.halting import Halt, Halted, InlineStop
from .inline import run_sync_steps, run_sync_steps_observed
from .layers.cache import cached, nested
from .layers.chain import failed
from .layers.events import observed
from .layers.place import place
from .level import Limiter, Scope
from .plan import Plan, Step, compile_plan

__all__ = [
    "Limiter",
    "Plan",
    "Scope",
    "Step",
    "cancel_requests",
    "compile_plan",
    "raise_first",
    "run_plan",
]

logger = logging.getLogger("hypernodes")


async def run_plan(plan: Plan, values: dict[str, Any], scope: Scope) -> None:
    """Run ``plan`` on ``values`` (mutated in place with every output).

    Raises:
        NodeError: The first node that failed, with this level's frame on its path.
    """
    try:
        steps = plan.steps
        if len(steps) == 1 and not plan.simple:
            # One step that is not a plain sync call (a map item's async node, say): its
            # layers directly, no segments (it awaits, so a cancel reaches it there).
            await run_step(steps[0], values, scope, scope.limiter)
        elif scope.concurrent and len(steps) > 1:
            if plan.linear:  # a chain: in order, in this task (no task group)
                limiter = _slots(plan, scope)
                for step in steps:
                    await run_step(step, values, scope, limiter)
            else:
                await _run_concurrent(plan, values, scope)
        else:
            await _run_sequential(plan, values, scope)
    except NodeError as err:
        scope.halt.set()  # the first failure ends the run: nothing more of it starts
        err._prepend(PathFrame(scope.pipeline))
        raise


async def _run_sequential(plan: Plan, values: dict[str, Any], scope: Scope) -> None:
    # Runs of plain sync steps go as one call: inline, or (without cache and callbacks,
    # whose work must stay on this thread) one hop to a worker thread (a run of one
    # step is placed like any other, so a cheap one may run inline). A remote worker
    # could not fill this values dict, so remote lanes take steps one by one.
    plain, inline = scope.plain, scope.inline
    hop = plain and not inline and scope.body.kind == "threads"
    # Inline, nothing suspends between bodies: a cancel (Ctrl-C) is only seen by checking.
    stop: Halt | InlineStop = scope.halt.inline() if inline else scope.halt
    try:
        for is_run, steps in plan.segments:
            if is_run:
                if inline:
                    if plain:
                        run_sync_steps(steps, values, stop)
                    else:
                        run_sync_steps_observed(steps, values, scope, stop)
                    continue
                if hop and len(steps) > 1:  # (one step: placed, so cheap ones inline)
                    label = " -> ".join(s.name for s in steps)
                    await scope.offload(run_sync_steps, (steps, values, stop), None, label)
                    continue
            for step in steps:
                if stop.over:
                    raise Halted
                await run_step(step, values, scope, scope.limiter)
    except Halted:
        await scope.halt.halted()


async def _run_concurrent(plan: Plan, values: dict[str, Any], scope: Scope) -> None:
    steps = plan.steps
    pending = [s.n_parents for s in steps]
    limiter = scope.limiter
    # At most `cap` chains live at once in this level; ready nodes beyond it wait in the
    # backlog for a chain to take them, rather than as tasks parked on the limiter.
    # (Not when a node may wait for a Limit or a backoff: a waiting node holds no slot,
    # so slots are taken per attempt instead.)
    cap = limiter.width if isinstance(limiter, Limiter) and not plan.waits else len(steps)
    limiter = _slots(plan, scope)
    backlog: deque[int] = deque()
    live = 0
    failures: list[BaseException] = []

    def launch(k: int) -> None:
        nonlocal live
        if live >= cap:
            backlog.append(k)
            return
        live += 1
        group.create_task(chain(k))  # noqa: F821 - deleted only once every chain ended

    async def chain(k: int) -> None:
        # Run step k, then keep going with the first child it made ready (or the backlog).
        nonlocal live
        try:
            while True:
                step = steps[k]
                await run_step(step, values, scope, limiter)
                follow = -1
                for c in step.children:
                    pending[c] -= 1
                    if pending[c] == 0:
                        if follow < 0:
                            follow = c
                        else:
                            launch(c)
                if follow < 0:
                    if not backlog:
                        return
                    follow = backlog.popleft()
                k = follow
        except BaseException as exc:
            if isinstance(exc, NodeError):
                scope.halt.set()  # stop the other chains' work in threads and processes now
            failures.append(exc)
            raise
        finally:
            live -= 1

    requests = cancel_requests()
    try:
        async with asyncio.TaskGroup() as group:
            first, *rest = plan.roots
            live = 1  # the first chain runs in this task
            for k in rest:
                launch(k)
            await chain(first)
    except BaseExceptionGroup as group_error:
        raise_first(group_error, failures, requests)
    finally:
        # ``launch`` and ``chain`` refer to each other through their cells: a cycle that
        # only a full collection would free, with this level's scope and task group (a
        # service making a run per request then collects garbage as much as it runs).
        # Every chain has ended here: the group waited for them.
        del chain


def _slots(plan: Plan, scope: Scope) -> Limiter | None:
    """The ``max_concurrent`` slot each step of this level takes, or ``None`` when no
    other level can share this run's limit (no nested pipelines, not a map item or a
    nested level, no node waiting between attempts): a cap on this level's own chains
    (``_run_concurrent``) then bounds its nodes without per-node slots."""
    limiter = scope.limiter
    if limiter is not None and limiter.owner is scope and not plan.nested and not plan.waits:
        return None
    return limiter


def cancel_requests() -> tuple[asyncio.Task[Any] | None, int]:
    """The current task and its pending cancel requests, taken before a task group."""
    task = asyncio.current_task()
    return task, (task.cancelling() if task is not None else 0)


def raise_first(
    group_error: BaseExceptionGroup[Any],
    failures: list[BaseException],
    requests: tuple[asyncio.Task[Any] | None, int],
) -> NoReturn:
    """Re-raise the first failure recorded in a task group as itself, not as a group.

    ``requests`` is :func:`cancel_requests` from before the group. On Python 3.11 and
    3.12 a task group whose body finished before a child failed leaves its own cancel
    request on the task (fixed in 3.13): it is withdrawn here, so the caller's task is
    not left "cancelling" (a later Ctrl-C would then end ``asyncio.run`` with
    ``CancelledError`` instead of ``KeyboardInterrupt``).
    """
    task, before = requests
    if task is not None and sys.version_info < (3, 13):
        while task.cancelling() > before:
            task.uncancel()
    for exc in failures:
        if not isinstance(exc, asyncio.CancelledError):
            try:
                raise exc
            finally:
                # Raised while the group is handled, exc would get it as __context__: a
                # group holding exc itself, which IPython answers by dumping plain text.
                exc.__context__ = None
    raise group_error


async def run_step(step: Step, values: dict[str, Any], scope: Scope, slot: Any) -> None:
    """Run one node through its layers (see ``hypernodes.layers``): cache, events, then its
    attempts (retry, limit and the level's ``max_concurrent`` ``slot``, timeout,
    placement); store its outputs in ``values``.

    Raises:
        NodeError: The node failed (or a nested node inside it did).
    """
    if scope.halt.over:
        await scope.halt.halted()
    args = step.gather(values)
    if step.nested is not None:
        await nested(step, step.nested, args, values, scope)
    elif scope.cache is not None and step.node.cache:
        await cached(step, args, values, scope, slot)
    elif scope.callbacks is not None:
        await observed(step, args, values, scope, slot)
    elif step.attempt is not None:
        # Its per-attempt layers, no events (``layers.events.attempt``, inlined).
        try:
            result = await step.attempt(step, args, scope, slot)
        except Exception as exc:
            error = failed(step.name, exc)
            raise error from error.__cause__
        step.store(result, values)
    else:
        # A plain step with no cache and no events: its placement alone, one await deep
        # (``layers.events.attempt`` inlined: this is the hot path of every run).
        try:
            if slot is None:
                result = await place(step, args, scope)
            else:
                async with slot:
                    result = await place(step, args, scope)
        except Exception as exc:
            error = node_failed(step.name, exc)
            raise error from error.__cause__
        step.store(result, values)
