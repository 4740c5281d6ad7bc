"""Configuration layers: global defaults, precedence, and the engine-configuration merge.

Precedence for a pipeline's engine, cache and callbacks, highest first:
``as_node(...)`` override > the pipeline's own setting > the enclosing pipeline's (for
nested pipelines) > ``set_default_config(...)`` > the library default
(``HyperNodesEngine()``, no cache, no callbacks). Each level replaces, never merges with,
the one below for that setting.

Engine configuration as data (files, the CLI, ``HyperNodesEngine.from_config``) is a
mapping with the keys in ``ENGINE_KEYS``, merged by :func:`merge_engine_config`.
"""

from __future__ import annotations

import atexit
import difflib
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from .cache.base import Cache
from .errors import ConfigError

__all__ = [
    "ENGINE_KEYS",
    "INLINE_BELOW",
    "UNSET",
    "DefaultConfig",
    "check_cache",
    "check_callbacks",
    "check_engine",
    "check_inline_below",
    "get_default_config",
    "merge_engine_config",
    "reset_default_config",
    "set_default_config",
]

ENGINE_KEYS: Final = (
    "node_executor",
    "map_executor",
    "max_workers",
    "max_concurrent",
    "address",
    "inline_below",
)

INLINE_BELOW: Final = 20e-6
"""``inline_below``'s default (seconds): about what handing a sync body to a worker
thread costs the event loop."""


def check_inline_below(value: object) -> None:
    """Raises:
    ConfigError: ``value`` is not a number >= 0 (seconds).
    """
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ConfigError(
            f"inline_below must be a number of seconds >= 0 (0 turns inlining off), got {value!r}"
        )


class _Unset:
    """Marks a setting the user never gave (distinct from an explicit ``None``)."""

    _instance: _Unset | None = None

    def __new__(cls) -> _Unset:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNSET"

    def __reduce__(self) -> str:
        return "UNSET"


UNSET: Final = _Unset()


@dataclass(frozen=True, slots=True)
class DefaultConfig:
    """The global defaults (``None`` where no default was set).

    Attributes:
        engine: The engine pipelines use when they have none of their own.
        cache: The cache pipelines use when they have none of their own.
        callbacks: The callbacks pipelines use when they have none of their own.
    """

    engine: Engine | None = None
    cache: Any = None
    callbacks: tuple[PipelineCallback, ...] | None = None


_lock = threading.Lock()
_defaults = DefaultConfig()
_library_engine: Engine | None = None


def set_default_config(
    engine: Engine | None = None,
    cache: Any = None,
    callbacks: Sequence[PipelineCallback] | None = None,
) -> None:
    """Set process-wide defaults; arguments left as ``None`` keep their current value.

    Raises:
        TypeError: ``engine`` is not an ``Engine`` instance, ``cache`` is not a ``Cache``
            instance, or ``callbacks`` is not a list of ``PipelineCallback`` instances.
    """
    global _defaults
    check_engine(engine)
    check_cache(cache)
    checked = None if callbacks is None else check_callbacks(callbacks)
    with _lock:
        _defaults = DefaultConfig(
            engine=engine if engine is not None else _defaults.engine,
            cache=cache if cache is not None else _defaults.cache,
            callbacks=checked if checked is not None else _defaults.callbacks,
        )


def check_engine(engine: object) -> None:
    """Check that ``engine`` is an ``Engine`` instance or ``None``.

    Raises:
        TypeError: It is not, with the fix (an instance, not the class; an alias goes in
            ``HyperNodesEngine(node_executor=...)``).
    """
    if engine is None or isinstance(engine, Engine):
        return
    hint = ""
    if isinstance(engine, type) and issubclass(engine, Engine):
        hint = f"; pass an instance: {engine.__name__}()"
    elif isinstance(engine, str):
        hint = f"; pass HyperNodesEngine(node_executor={engine!r})"
    raise TypeError(f"engine must be an Engine instance, got {engine!r}{hint}")


def check_cache(cache: object) -> None:
    """Check that ``cache`` is a ``Cache`` instance or ``None``.

    Raises:
        TypeError: It is not (with the fix when a class was passed).
    """
    if cache is None or isinstance(cache, Cache):
        return
    hint = ""
    if isinstance(cache, type) and issubclass(cache, Cache):
        hint = f"; pass an instance: {cache.__name__}(...)"
    raise TypeError(
        f"cache must be a Cache instance (MemoryCache(), DiskCache(path)) or None, "
        f"got {cache!r}{hint}"
    )


def check_callbacks(callbacks: object) -> tuple[PipelineCallback, ...]:
    """``callbacks`` as a tuple of ``PipelineCallback`` instances.

    Raises:
        TypeError: It is a single callback (not a list), or holds something that is not a
            ``PipelineCallback`` instance (with the fix when a class was passed).
    """
    if isinstance(callbacks, PipelineCallback) or not isinstance(callbacks, Iterable):
        hint = (
            f"; wrap a single callback in a list: callbacks=[{type(callbacks).__name__}()]"
            if isinstance(callbacks, PipelineCallback)
            else ""
        )
        raise TypeError(
            f"callbacks must be a list of PipelineCallback instances, got {callbacks!r}{hint}"
        )
    checked = tuple(callbacks)
    for cb in checked:
        if not isinstance(cb, PipelineCallback):
            hint = (
                f"; pass an instance: {cb.__name__}()"
                if isinstance(cb, type) and issubclass(cb, PipelineCallback)
                else ""
            )
            raise TypeError(f"callbacks must be PipelineCallback instances, got {cb!r}{hint}")
    return checked


def get_default_config() -> DefaultConfig:
    """The current global defaults."""
    return _defaults


def reset_default_config() -> None:
    """Restore the library defaults: ``HyperNodesEngine()``, no cache, no callbacks."""
    global _defaults
    with _lock:
        _defaults = DefaultConfig()


def library_engine() -> Engine:
    """The shared ``HyperNodesEngine()`` used when nothing else is configured."""
    global _library_engine
    if _library_engine is None:
        with _lock:
            if _library_engine is None:
                from .engines.hypernodes import HyperNodesEngine  # deferred: asyncio, and a cycle

                _library_engine = HyperNodesEngine()
                atexit.register(_library_engine.close)
    return _library_engine


def effective_engine(pipeline: Pipeline) -> Engine:
    """The engine a top-level run of ``pipeline`` uses."""
    if pipeline.engine is not None:
        return pipeline.engine
    return _defaults.engine if _defaults.engine is not None else library_engine()


def effective_cache(pipeline: Pipeline) -> Any:
    """The cache a top-level run of ``pipeline`` uses (``None``: no caching)."""
    own = pipeline.own_cache
    return _defaults.cache if own is UNSET else own


def effective_callbacks(pipeline: Pipeline) -> tuple[PipelineCallback, ...]:
    """The callbacks a top-level run of ``pipeline`` uses."""
    own = pipeline.own_callbacks
    if own is UNSET:
        return _defaults.callbacks or ()
    return own


def merge_engine_config(*layers: Mapping[str, Any] | None) -> dict[str, Any]:
    """Merge engine-configuration layers, lowest precedence first.

    A key present in a layer wins over earlier layers, even when its value equals the
    class default; an absent key never clobbers; an explicit ``None`` does (and means
    "the class default"). ``None`` layers are skipped.

    Raises:
        ConfigError: A layer is not a mapping, has an unknown key, or a bad value.
        InvalidExecutorError: An unknown executor alias.
    """
    from .executors.pools import validate_executor  # deferred: asyncio, multiprocessing

    merged: dict[str, Any] = {}
    for layer in layers:
        if layer is None:
            continue
        if not isinstance(layer, Mapping):
            raise ConfigError(f"engine configuration must be a mapping, got {layer!r}")
        for key, value in layer.items():
            if key not in ENGINE_KEYS:
                close = difflib.get_close_matches(str(key), ENGINE_KEYS, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ConfigError(
                    f"unknown engine setting {key!r}{hint}; valid keys are {', '.join(ENGINE_KEYS)}"
                )
            merged[key] = value
    for key in ("node_executor", "map_executor"):
        if merged.get(key) is not None:
            validate_executor(merged[key], key)
    for key in ("max_workers", "max_concurrent"):
        value = merged.get(key)
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or value < 1
        ):
            raise ConfigError(f"{key} must be an integer >= 1 or null, got {value!r}")
    address = merged.get("address")
    if address is not None and not isinstance(address, str):
        raise ConfigError(f"address must be a string or null, got {address!r}")
    if merged.get("inline_below") is not None:
        check_inline_below(merged["inline_below"])
    return merged


# The kernel modules that name each other (callbacks, config, engines.base, nested, pipeline)
# import each other last, once every name of the module exists: then any of them can be
# imported first (tests/test_type_hints.py checks). Annotations need these names at run
# time (typing.get_type_hints), not only under TYPE_CHECKING.
from .callbacks import PipelineCallback  # noqa: E402
from .engines.base import Engine  # noqa: E402
from .pipeline import Pipeline  # noqa: E402
