"""Configuration files: ``hypernodes.yaml`` / ``.yml`` and ``[tool.hypernodes]`` in ``pyproject.toml``.

A configuration file holds an ``engine:`` mapping (the keys of
:data:`hypernodes.config.ENGINE_KEYS`) and an optional ``cache_dir``::

    # hypernodes.yaml
    engine:
      node_executor: async
      max_workers: 4
    cache_dir: .hypernodes-cache

    # pyproject.toml
    [tool.hypernodes]
    cache_dir = ".hypernodes-cache"

    [tool.hypernodes.engine]
    node_executor = "async"

Discovery looks in one directory (the working directory by default): ``hypernodes.yaml``,
then ``hypernodes.yml``, then a ``pyproject.toml`` that has a ``[tool.hypernodes]`` table.
A relative ``cache_dir`` is relative to the file's directory. This module only reads and
validates; merging with other layers is :func:`hypernodes.config.merge_engine_config`.
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from .config import ENGINE_KEYS, merge_engine_config
from .errors import ConfigError, InvalidExecutorError

__all__ = [
    "CONFIG_NAMES",
    "FILE_KEYS",
    "ConfigFile",
    "find_config",
    "load_config",
    "parse_yaml",
    "read_config",
]

CONFIG_NAMES: Final = ("hypernodes.yaml", "hypernodes.yml", "pyproject.toml")
"""File names looked for, in order, when no file is given."""

FILE_KEYS: Final = ("engine", "cache_dir")
"""The top-level keys a configuration file may hold."""


@dataclass(frozen=True, slots=True)
class ConfigFile:
    """The settings read from one configuration file (empty when there is none).

    Attributes:
        path: The file they came from, or ``None``.
        engine: The engine mapping as written (validated; explicit ``null`` kept).
        cache_dir: The cache directory, resolved against the file's directory, or ``None``.
    """

    path: Path | None = None
    engine: dict[str, Any] = field(default_factory=dict)
    cache_dir: Path | None = None


def find_config(directory: str | os.PathLike[str] | None = None) -> Path | None:
    """The configuration file in ``directory`` (default: the working directory), if any.

    Raises:
        ConfigError: Both ``hypernodes.yaml`` and ``hypernodes.yml`` exist, or the
            ``pyproject.toml`` there cannot be read.
    """
    base = Path.cwd() if directory is None else Path(directory)
    yamls = [base / name for name in CONFIG_NAMES[:2] if (base / name).is_file()]
    if len(yamls) == 2:
        raise ConfigError(
            f"both {yamls[0]} and {yamls[1]} exist; keep one, or choose with --config"
        )
    if yamls:
        return yamls[0]
    pyproject = base / "pyproject.toml"
    if pyproject.is_file() and _tool_table(_parse_toml(pyproject), pyproject) is not None:
        return pyproject
    return None


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    directory: str | os.PathLike[str] | None = None,
) -> ConfigFile:
    """Read ``path``, or the file :func:`find_config` finds; an empty config when none.

    Raises:
        ConfigError: The file is missing, malformed (the message gives the position), or
            holds an unknown key or a bad value (the message names the file).
    """
    if path is None:
        found = find_config(directory)
        return ConfigFile() if found is None else read_config(found)
    return read_config(path)


def read_config(path: str | os.PathLike[str]) -> ConfigFile:
    """Read one configuration file; the format follows the name.

    ``pyproject.toml`` is read for its ``[tool.hypernodes]`` table; any other ``.toml``
    and ``.json`` files hold the settings at the top level; anything else is YAML.

    Raises:
        ConfigError: The file is missing, malformed, or holds unknown keys or bad values.
    """
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"config file {str(file)!r} not found")
    data: Any
    if file.suffix == ".toml":
        data = _parse_toml(file)
        if file.name == "pyproject.toml":
            data = _tool_table(data, file)
            if data is None:
                raise ConfigError(f"{file} has no [tool.hypernodes] table")
    elif file.suffix == ".json":
        data = _parse_json(file)
    else:
        data = _parse_yaml(file)
    return _validate(data, file)


def _validate(data: Any, file: Path) -> ConfigFile:
    if data is None:
        return ConfigFile(path=file)
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"{file}: the top level must be a mapping with the keys "
            f"{', '.join(FILE_KEYS)}, got {type(data).__name__}"
        )
    for key in data:
        if key not in FILE_KEYS:
            close = difflib.get_close_matches(str(key), FILE_KEYS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            if key in ENGINE_KEYS:
                hint = f" (engine settings go under 'engine:', e.g. engine: {{{key}: ...}})"
            raise ConfigError(
                f"{file}: unknown setting {key!r}{hint}; valid keys are {', '.join(FILE_KEYS)}"
            )
    engine = data.get("engine")
    if engine is None:
        engine = {}
    if not isinstance(engine, Mapping):
        raise ConfigError(
            f"{file}: 'engine' must be a mapping of engine settings, got {engine!r}; "
            "e.g. engine: {node_executor: async}"
        )
    try:
        merge_engine_config(engine)
    except InvalidExecutorError as exc:
        raise InvalidExecutorError(f"{file}: {exc}") from None
    except ConfigError as exc:
        raise ConfigError(f"{file}: {exc}") from None
    cache_dir = data.get("cache_dir")
    if cache_dir is not None and not isinstance(cache_dir, str):
        raise ConfigError(f"{file}: 'cache_dir' must be a path string, got {cache_dir!r}")
    resolved = None if cache_dir is None else (file.parent / Path(cache_dir).expanduser())
    return ConfigFile(path=file, engine=dict(engine), cache_dir=resolved)


def _parse_toml(file: Path) -> dict[str, Any]:
    import tomllib  # deferred: only TOML files need it

    try:
        with file.open("rb") as stream:
            return tomllib.load(stream)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: invalid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {file}: {exc.strerror}") from None


def _tool_table(data: Mapping[str, Any], file: Path) -> Any:
    tool = data.get("tool")
    if not isinstance(tool, Mapping):
        return None
    table = tool.get("hypernodes")
    if table is not None and not isinstance(table, Mapping):
        raise ConfigError(f"{file}: [tool.hypernodes] must be a table, got {table!r}")
    return table


def _parse_json(file: Path) -> Any:
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{file}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {file}: {exc}") from None


def _parse_yaml(file: Path) -> Any:
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {file}: {exc}") from None
    return parse_yaml(text, str(file))


def parse_yaml(text: str, where: str) -> Any:
    """Parse YAML ``text`` safely; errors name ``where`` and the line and column.

    Raises:
        ConfigError: The text is not valid YAML, or PyYAML is not installed.
    """
    try:
        import yaml
    except ImportError:
        raise ConfigError(f"reading {where} needs PyYAML: pip install 'hypernodes[cli]'") from None
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = exc.problem or exc.context or "malformed"
        raise ConfigError(f"{where}: invalid YAML{at}: {problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: invalid YAML: {exc}") from None
