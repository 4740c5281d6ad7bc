"""Process workers: what travels to and from them, and what happens when one dies.

Worker tracebacks name the user's file, line and source text whatever file name the
shipped code carries in the worker.
"""

from __future__ import annotations

import types
from typing import Any

import pytest

from hypernodes.executors.remote import RemoteFailure, Shipped, call_shipped
from hypernodes.executors.worker_tracebacks import capture, render


class UserError(Exception):
    """An exception type of the user's."""


# -- worker tracebacks -----------------------------------------------------------------


def test_a_shipped_function_fails_with_its_own_file_line_and_source() -> None:
    def fails(x: int) -> int:
        raise UserError(f"no {x}")

    # Loaded from its pickle, as in a worker (here in this process).
    failure = call_shipped(Shipped(fails), (3,), {})
    assert type(failure) is RemoteFailure
    with pytest.raises(UserError, match="no 3") as info:
        failure.reraise()
    (note,) = info.value.__notes__
    assert note.startswith("Traceback in the worker:\nTraceback (most recent call last):\n")
    line = fails.__code__.co_firstlineno + 1
    assert f'File "{__file__}", line {line}, in fails\n    raise UserError(f"no {{x}}")' in note
    assert note.endswith("UserError: no 3")


@pytest.mark.parametrize(
    "worker_file",
    ["<dynamic-code>", "/nowhere/renamed.py", __file__],
    ids=["rewritten", "missing-in-the-worker", "kept"],
)
def test_frames_map_back_to_the_shipped_codes_file(worker_file: str) -> None:
    # Whatever file name the worker's copy of the code carries (a pickler may rewrite it,
    # or keep a path the worker cannot read), the rendered frame names the real one.
    def fails(x: int) -> int:
        raise UserError(f"no {x}")

    Shipped(fails)  # this process ships the code: it knows where it came from
    code = fails.__code__.replace(co_filename=worker_file)
    in_worker = types.FunctionType(code, fails.__globals__, "fails", None, fails.__closure__)
    try:
        in_worker(4)
    except UserError as exc:
        trace = capture(exc)
    text = render(trace)
    line = fails.__code__.co_firstlineno + 1
    assert f'File "{__file__}", line {line}, in fails\n    raise UserError(f"no {{x}}")' in text
    assert worker_file == __file__ or worker_file not in text


def test_a_chained_worker_error_keeps_its_chain() -> None:
    def inner() -> None:
        raise KeyError("k")

    def fails(x: int) -> int:
        try:
            inner()
        except KeyError as exc:
            raise UserError("outer") from exc
        return x

    failure: Any = call_shipped(Shipped(fails), (1,), {})
    with pytest.raises(UserError) as info:
        failure.reraise()
    (note,) = info.value.__notes__
    first, rest = note.split("The above exception was the direct cause")
    assert 'raise KeyError("k")' in first and "KeyError: 'k'" in first
    assert 'raise UserError("outer") from exc' in rest
