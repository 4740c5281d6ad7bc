"""HyperNodes: an asyncio-native execution kernel for pipelines of Python functions.

Names that need asyncio or I/O (the engine, the bridge, the cache stores) are re-exported
lazily, on first access: defining nodes and pipelines never pays for importing asyncio
(about half of a cold ``import hypernodes`` otherwise).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from .cache.base import Cache
from .callbacks import CallbackContext, PipelineCallback
from .config import get_default_config, reset_default_config, set_default_config
from .engines.base import Engine
from .errors import (
    CacheWarning,
    CacheWriteError,
    ConfigError,
    CycleError,
    DuplicateOutputError,
    HyperNodesError,
    InvalidExecutorError,
    InvalidInputError,
    MissingInputError,
    NodeError,
    PipelineDefinitionError,
    ResourceError,
    TargetError,
    TypeMismatchError,
    UnfingerprintableError,
    UnsupportedNodeError,
    WorkerLostError,
)
from .layers.limit import Limit
from .layers.retry import Retry
from .nested import PipelineNode
from .node import Node, node
from .pipeline import Pipeline
from .progress import ProgressCallback
from .resources import resource
from .results import ItemFailure, MapResult

__all__ = [
    "Cache",
    "CacheWarning",
    "CacheWriteError",
    "CallbackContext",
    "Chunk",
    "ConfigError",
    "CycleError",
    "DiskCache",
    "DuplicateOutputError",
    "Engine",
    "HyperNodesEngine",
    "HyperNodesError",
    "InvalidExecutorError",
    "InvalidInputError",
    "ItemFailure",
    "Limit",
    "MapResult",
    "MemoryCache",
    "MissingInputError",
    "Node",
    "NodeError",
    "Output",
    "Pipeline",
    "PipelineCallback",
    "PipelineDefinitionError",
    "PipelineNode",
    "ProgressCallback",
    "ResourceError",
    "Retry",
    "TargetError",
    "TypeMismatchError",
    "UnfingerprintableError",
    "UnsupportedNodeError",
    "WorkerLostError",
    "__version__",
    "enable_nested_loops",
    "get_default_config",
    "node",
    "reset_default_config",
    "resource",
    "set_default_config",
]

__version__ = "0.5.0.dev0"

if TYPE_CHECKING:
    from .bridge import enable_nested_loops
    from .cache.disk import DiskCache
    from .cache.memory import MemoryCache
    from .engines.hypernodes import HyperNodesEngine
    from .streaming import Chunk, Output

_LAZY = {
    "Chunk": ".streaming",
    "DiskCache": ".cache.disk",
    "HyperNodesEngine": ".engines.hypernodes",
    "MemoryCache": ".cache.memory",
    "Output": ".streaming",
    "enable_nested_loops": ".bridge",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
