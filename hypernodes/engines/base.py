"""Engine: the orchestrator interface. ``arun`` / ``amap`` are the implementations;
the sync ``run`` / ``map`` live here, once, as bridges over them."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from ..callbacks import CallbackContext, Dispatcher
    from ..pipeline import Pipeline
    from ..scheduler import Scope

__all__ = ["Engine", "MapMode", "OutputName", "Parent"]

OutputName = str | Sequence[str] | None
MapMode = Literal["zip", "product"]


@dataclass(slots=True)
class Parent:
    """What a nested level receives from the level that runs it.

    Attributes:
        scope: The enclosing level's scope.
        cache: The cache this level uses (already resolved by precedence), or ``None``.
        callbacks: The dispatcher this level uses, or ``None``.
        context: This level's callback context (created by the nested node).
    """

    scope: Scope
    cache: Any
    callbacks: Dispatcher | None
    context: CallbackContext | None


class Engine(ABC):
    """Runs pipelines. Subclasses implement ``arun`` and ``amap``."""

    @abstractmethod
    async def arun(
        self,
        pipeline: Pipeline,
        inputs: Mapping[str, Any] | None = None,
        output_name: OutputName = None,
        *,
        _parent: Parent | None = None,
    ) -> dict[str, Any]:
        """Run ``pipeline`` once; return the requested outputs."""

    @abstractmethod
    async def amap(
        self,
        pipeline: Pipeline,
        inputs: Mapping[str, Any],
        map_over: str | Sequence[str],
        map_mode: MapMode = "zip",
        output_name: OutputName = None,
        *,
        _parent: Parent | None = None,
    ) -> list[dict[str, Any]]:
        """Run ``pipeline`` once per item; return one result dict per item, in order."""

    def run(
        self,
        pipeline: Pipeline,
        inputs: Mapping[str, Any] | None = None,
        output_name: OutputName = None,
    ) -> dict[str, Any]:
        """Sync twin of :meth:`arun`."""
        from ..bridge import run_sync  # deferred: asyncio is not needed to define pipelines

        return run_sync(self.arun(pipeline, inputs, output_name))

    def map(
        self,
        pipeline: Pipeline,
        inputs: Mapping[str, Any],
        map_over: str | Sequence[str],
        map_mode: MapMode = "zip",
        output_name: OutputName = None,
    ) -> list[dict[str, Any]]:
        """Sync twin of :meth:`amap`."""
        from ..bridge import run_sync

        return run_sync(self.amap(pipeline, inputs, map_over, map_mode, output_name))

    def close(self) -> None:  # noqa: B027 - optional hook: engines without resources
        """Release what the engine owns (pools, clusters). Idempotent."""

    async def aclose(self) -> None:
        """Async twin of :meth:`close`."""
        self.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> Engine:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
