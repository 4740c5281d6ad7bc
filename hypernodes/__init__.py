"""HyperNodes: an asyncio-native execution kernel for pipelines of Python functions."""

from __future__ import annotations

from .bridge import enable_nested_loops
from .cache import Cache, DiskCache, MemoryCache
from .callbacks import CallbackContext, PipelineCallback
from .config import get_default_config, reset_default_config, set_default_config
from .engines import Engine, HyperNodesEngine
from .errors import (
    ConfigError,
    CycleError,
    DuplicateOutputError,
    HyperNodesError,
    InvalidExecutorError,
    InvalidInputError,
    MissingInputError,
    NodeError,
    PipelineDefinitionError,
)
from .nested import PipelineNode
from .node import Node, node
from .pipeline import Pipeline
from .progress import ProgressCallback

__all__ = [
    "Cache",
    "CallbackContext",
    "ConfigError",
    "CycleError",
    "DiskCache",
    "DuplicateOutputError",
    "Engine",
    "HyperNodesEngine",
    "HyperNodesError",
    "InvalidExecutorError",
    "InvalidInputError",
    "MemoryCache",
    "MissingInputError",
    "Node",
    "NodeError",
    "Pipeline",
    "PipelineCallback",
    "PipelineDefinitionError",
    "PipelineNode",
    "ProgressCallback",
    "__version__",
    "enable_nested_loops",
    "get_default_config",
    "node",
    "reset_default_config",
    "set_default_config",
]

__version__ = "0.5.0.dev0"
