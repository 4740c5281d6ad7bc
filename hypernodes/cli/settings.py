"""Command-line settings to a configured pipeline: JSON arguments, engine, cache, streams.

Engine layering, lowest first: the library defaults, the configuration file, the
pipeline's own engine (set in code), ``--engine-cfg``, then the convenience flags; merged by
:func:`hypernodes.config.merge_engine_config` (the code behind
``HyperNodesEngine.from_config``). The configuration file only fills in what the pipeline
leaves unset; settings on the command line replace what the pipeline sets. Only flags the
user passed form a layer, so an unset flag never clobbers; an explicit ``null`` in
``--engine-cfg`` does (and means the class default).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import UNSET, effective_callbacks
from ..config_files import parse_yaml
from ..engines.hypernodes import HyperNodesEngine
from ..errors import ConfigError, HyperNodesError
from ..pipeline import Pipeline

__all__ = [
    "EngineChoice",
    "choose_cache",
    "choose_engine",
    "parse_mapping",
    "stdout_to_stderr",
    "with_progress",
]


def parse_mapping(
    text: str, *, option: str, error: type[HyperNodesError] = ConfigError
) -> dict[str, Any]:
    """A JSON object given inline, or read from ``@file.json``, ``@file.yaml`` or ``@-``.

    Raises:
        HyperNodesError: Of type ``error``: the text or file is not valid JSON / YAML (with
            the position), the file is missing, or the document is not an object.
    """
    if text.startswith("@"):
        name = text[1:]
        if name == "-":
            where, source, is_yaml = f"{option} @- (stdin)", sys.stdin.read(), False
        else:
            file = Path(name).expanduser()
            try:
                source = file.read_text(encoding="utf-8")
            except FileNotFoundError:
                raise error(f"{option}: file {name!r} not found") from None
            except (OSError, UnicodeDecodeError) as exc:
                raise error(f"{option}: cannot read {name!r}: {exc}") from None
            where, is_yaml = f"{option} {name}", file.suffix in (".yaml", ".yml")
    else:
        where, source, is_yaml = option, text, False
    if is_yaml:
        try:
            data = parse_yaml(source, where)
        except ConfigError as exc:
            raise error(str(exc)) from None
    else:
        data = _parse_json(source, where, text, error)
    if not isinstance(data, Mapping):
        raise error(
            f"{where} must be a JSON object such as '{{\"x\": 1}}', got "
            f"{'nothing' if data is None else type(data).__name__}"
        )
    return dict(data)


def _parse_json(source: str, where: str, text: str, error: type[HyperNodesError]) -> Any:
    try:
        return json.loads(source)
    except json.JSONDecodeError as exc:
        at = (
            f"column {exc.colno}"
            if "\n" not in source
            else f"line {exc.lineno}, column {exc.colno}"
        )
        hint = ""
        if "double quotes" in exc.msg:
            hint = "; JSON needs double quotes around names and strings: '{\"x\": 1}'"
        elif not text.lstrip().startswith(("{", "@")) and Path(text).suffix:
            hint = f"; to read a file, write @{text}"
        raise error(f"{where} is not valid JSON: {exc.msg} at {at}{hint}") from None


@dataclass(frozen=True, slots=True)
class EngineChoice:
    """What the CLI does with the pipeline's engine.

    Attributes:
        engine: The engine to install, or ``None`` to leave the pipeline as it is.
        note: Something the user should know (printed on stderr), or ``None``.
    """

    engine: HyperNodesEngine | None
    note: str | None = None


def choose_engine(
    pipeline: Pipeline,
    file_layer: Mapping[str, Any] | None,
    *command_line: Mapping[str, Any] | None,
) -> EngineChoice:
    """The engine for ``pipeline``, from the file and the command-line layers (lowest first).

    Raises:
        ConfigError: An unknown key or a bad value in some layer.
        InvalidExecutorError: An unknown executor alias.
    """
    explicit = [layer for layer in command_line if layer]
    own = pipeline.engine
    if own is None:
        if not file_layer and not explicit:
            return EngineChoice(None)
        return EngineChoice(HyperNodesEngine.from_config(file_layer, *explicit))
    if not explicit:
        return EngineChoice(None)
    base: Mapping[str, Any] | None = None
    note = None
    if isinstance(own, HyperNodesEngine):
        try:
            base = own.to_config()
        except ConfigError:
            note = f"the pipeline's engine {own!r} uses an executor instance; "
    else:
        note = f"the pipeline's {type(own).__name__} "
    if note is not None:
        note += "the command-line engine settings replace it"
        base = file_layer
    return EngineChoice(HyperNodesEngine.from_config(base, *explicit), note)


def choose_cache(
    pipeline: Pipeline, file_cache_dir: Path | None, flag_cache_dir: str | None
) -> Any:
    """A ``DiskCache`` to install on ``pipeline``, or ``None`` to leave its cache alone.

    ``--cache-dir`` always wins; the file's ``cache_dir`` applies only to a pipeline that
    sets no cache of its own.
    """
    from ..cache import DiskCache  # deferred: asyncio and sqlite, only with a cache

    if flag_cache_dir is not None:
        return DiskCache(Path(flag_cache_dir).expanduser())
    if file_cache_dir is not None and pipeline.own_cache is UNSET:
        return DiskCache(file_cache_dir)
    return None


def with_progress(pipeline: Pipeline, enabled: bool | None) -> bool:
    """Add a ``ProgressCallback`` to the callbacks the pipeline would use.

    ``None`` means "when stderr is a terminal". Returns whether bars were added.

    Raises:
        ImportError: Progress bars were asked for and their extra is not installed.
    """
    if enabled is None:
        enabled = _isatty(sys.stderr)
    if not enabled:
        return False
    from ..progress import ProgressCallback  # deferred: tqdm or rich, only with bars

    pipeline.with_callbacks((*effective_callbacks(pipeline), ProgressCallback()))
    return True


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Send everything written to stdout to stderr meanwhile, down to the file descriptor.

    So what nodes ``print`` (in this process, its threads, or worker processes started
    meanwhile) cannot corrupt the JSON document the CLI writes to stdout afterwards.
    """
    out, err = sys.stdout, sys.stderr
    saved: int | None = None
    fd = -1
    with contextlib.suppress(AttributeError, OSError, ValueError):
        out.flush()
        fd, err_fd = out.fileno(), err.fileno()
        if fd != err_fd:
            err.flush()
            saved = os.dup(fd)
            os.dup2(err_fd, fd)
    try:
        with contextlib.redirect_stdout(err):
            yield
    finally:
        with contextlib.suppress(AttributeError, OSError, ValueError):
            err.flush()
        if saved is not None:
            os.dup2(saved, fd)
            os.close(saved)
