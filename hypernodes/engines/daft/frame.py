"""A program as a Daft DataFrame: one row per item, one row-wise function column per node.

Every column holds Python objects (``DataType.python()``), so values cross the frame
exactly as they are (no Arrow conversion turns a tuple into a list or an int into a
float) and results equal HyperNodesEngine's. Tuple outputs come back from one function as
a struct of several columns (``unnest``). ``daft`` is imported only here.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ...errors import ConfigError
from .calls import make_call, nested_body
from .program import ROW, Column, Const, Op, Program, UnsupportedNodeError

__all__ = ["Frame", "build_frame", "ensure_runner", "import_daft", "iterate", "stream"]

_INSTALL = "pip install 'hypernodes[daft]'"


def import_daft() -> Any:
    """The ``daft`` module.

    Raises:
        ImportError: Daft is not installed (names the ``pip install`` line).
    """
    try:
        import daft
    except ImportError as exc:  # pragma: no cover - the dev venv has the extra
        raise ImportError(f"DaftEngine needs Daft, which is not installed: {_INSTALL}") from exc
    return daft


_runner_lock = threading.Lock()


def ensure_runner(runner: str, ray_address: str | None) -> None:
    """Make Daft use ``runner`` in this process (Daft allows one runner per process).

    Raises:
        ConfigError: Daft already runs with another runner in this process.
    """
    daft = import_daft()
    with _runner_lock:
        current = _current_runner(daft)
        if current == runner:
            return
        if current is not None:
            raise ConfigError(
                f"DaftEngine(runner={runner!r}) cannot start: Daft already uses its "
                f"{current!r} runner in this process, and Daft allows one runner per "
                f"process; use DaftEngine(runner={current!r}) or a fresh process"
            )
        if runner == "ray":
            daft.set_runner_ray(address=ray_address)
        else:
            daft.set_runner_native()


def _current_runner(daft: Any) -> str | None:
    """The runner Daft uses in this process, or ``None`` when none is set yet.

    Asked before setting one: Daft's ``set_runner_ray`` starts Ray before it finds out
    that another runner is already set.
    """
    get = getattr(daft.runners, "_get_runner", None)  # Daft's own "is one set?" check
    if get is None:  # pragma: no cover - other Daft versions
        return None
    found = get()
    return None if found is None else str(found.name)


@dataclass(slots=True)
class Frame:
    """A lazy DataFrame and what to read back from it.

    Attributes:
        df: The Daft DataFrame (lazy).
        columns: The columns to collect (the row index first).
        timings: For each op, the column holding its duration (when observed).
    """

    df: Any
    columns: list[str]
    timings: dict[int, str]


def build_frame(
    program: Program,
    rows: Sequence[int],
    values: dict[str, list[Any]],
    hits: dict[int, list[Any]] | None,
    *,
    observe: bool,
    raise_errors: bool,
) -> Frame:
    """The DataFrame computing ``program`` for ``rows``.

    Args:
        program: What to compute.
        rows: The item index of each row.
        values: For each mapped input, its value in each row.
        hits: For each cached top-level step, per row: ``Hit``, ``SKIP`` or ``None``.
        observe: Collect every op's outputs and duration (to replay callbacks).
        raise_errors: Let failures raise inside Daft (lazy frames) instead of travelling
            as values.

    Raises:
        UnsupportedNodeError: A node's function cannot be serialized for Daft.
    """
    daft = import_daft()
    python = daft.DataType.python()
    data: dict[str, Any] = {ROW: daft.Series.from_pylist(list(rows), name=ROW)}
    for name, column in values.items():
        data[name] = daft.Series.from_pylist(column, name=name, dtype=python)
    hit_columns: dict[int, str] = {}
    for step, column in (hits or {}).items():
        hit_columns[step] = f"__hn_hit{step}"
        data[hit_columns[step]] = daft.Series.from_pylist(
            column, name=hit_columns[step], dtype=python
        )
    df = daft.from_pydict(data)
    timings: dict[int, str] = {}
    for op in program.ops:
        timing = f"__hn_t{op.index}" if observe else None
        if timing is not None:
            timings[op.index] = timing
        df = _add_op(daft, df, op, hit_columns.get(op.step), timing, raise_errors)
    if observe:
        columns = [ROW, *program.inputs, *(c for op in program.ops for c in op.outs)]
        columns.extend(timings.values())
        columns.extend(f"__hn_ev{op.index}" for op in program.ops if op.nested)
    else:
        columns = [ROW, *_sinks(program)]
    return Frame(df.select(*dict.fromkeys(columns)), columns, timings)


def _sinks(program: Program) -> list[str]:
    """The columns to read back: requested outputs, plus every column no op reads (a
    failure there would otherwise go unseen)."""
    consumed = program.consumed()
    wanted = [s.name for s in program.outputs.values() if isinstance(s, Column)]
    loose = [c for op in program.ops for c in op.outs if c not in consumed]
    return list(dict.fromkeys([*wanted, *loose]))


def _add_op(
    daft: Any, df: Any, op: Op, hit: str | None, timing: str | None, raise_errors: bool
) -> Any:
    node = op.node
    python = daft.DataType.python()
    layout: list[int | None] = []
    constants: list[Any] = []
    exprs = [daft.col(ROW)]
    for source in op.args:
        if isinstance(source, Const):
            layout.append(None)
            constants.append(source.value)
        else:
            layout.append(len(exprs) - 1)
            constants.append(None)
            exprs.append(daft.col(source.name))
    if hit is not None:
        exprs.append(daft.col(hit))
    records = f"__hn_ev{op.index}" if op.nested and timing is not None else None
    outs = tuple(c for c in (*op.outs, timing, records) if c is not None)
    struct = len(outs) > 1
    if op.nested:
        stripped = node.pipeline.stripped()  # type: ignore[attr-defined]
        body: Callable[..., Any] = nested_body(node, stripped, records is not None)
        is_async = True
    else:
        body, is_async = op.fn, node.is_async
    path = "/".join(level.pipeline.name for level in op.level.path)
    call = make_call(
        op=op.index,
        name=node.name,
        label=f"{path}.{node.name}",
        body=body,
        is_async=is_async,
        layout=tuple(layout),
        constants=tuple(constants),
        outs=outs if struct else None,
        timing=timing,
        records=records,
        cached=hit is not None,
        node=node,
        raise_errors=raise_errors,
    )
    try:
        if struct:
            dtype = daft.DataType.struct(dict.fromkeys(outs, python))
            fn = daft.func(call, return_dtype=dtype, unnest=True)
            return df.select("*", fn(*exprs))
        fn = daft.func(call, return_dtype=python)
        return df.with_column(op.outs[0], fn(*exprs))
    except ValueError as exc:  # Daft checks that functions can be serialized
        raise UnsupportedNodeError(node.name, str(exc)) from exc


def iterate(frame: Frame, stop: threading.Event) -> Iterator[dict[str, list[Any]]]:
    """Execute the frame, yielding its results a partition at a time (until ``stop``)."""
    parts = frame.df.iter_partitions()
    try:
        for part in parts:
            if stop.is_set():
                return
            if not hasattr(part, "to_pydict"):  # the Ray runner yields object references
                import ray  # deferred: only the Ray runner yields references

                part = ray.get(part)
            yield part.to_pydict()
    finally:
        close = getattr(parts, "close", None)
        if close is not None:
            close()


async def stream(frame: Frame) -> AsyncIterator[dict[str, list[Any]]]:
    """The frame's partitions, computed in a thread and handed to this loop as they come.

    Leaving early (a failure, a cancellation) stops the computation at the next partition.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[bool, Any]] = asyncio.Queue()
    stop = threading.Event()

    def hand_over(item: tuple[bool, Any]) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            stop.set()

    def produce() -> None:
        try:
            for part in iterate(frame, stop):
                hand_over((True, part))
        except BaseException as exc:
            hand_over((False, exc))
        else:
            hand_over((False, None))

    threading.Thread(target=produce, name="hypernodes-daft", daemon=True).start()
    try:
        while True:
            ok, payload = await queue.get()
            if ok:
                yield payload
            elif payload is None:
                return
            else:
                raise payload
    finally:
        stop.set()
