"""LazyModule: a module named in annotations, imported only when an annotation is resolved.

``typing.get_type_hints`` evaluates annotations in the defining module's globals, where a
name imported only under ``TYPE_CHECKING`` does not exist. For a module that ``import
hypernodes`` must not load (networkx; the scheduler, which needs asyncio), bind a
``LazyModule`` under the same name at run time: ``nx.DiGraph`` then resolves, importing
networkx, when something reads the hints, and not before.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["LazyModule"]


class LazyModule:
    """Stands for the module ``name`` and imports it on first attribute access.

    Unlike :class:`importlib.util.LazyLoader` it never enters ``sys.modules``, so the
    module counts as loaded only once it is used. Dunder lookups (from ``copy``,
    ``inspect``, doc tools) raise ``AttributeError`` without importing anything.

    Args:
        name: The absolute module name, e.g. ``"networkx"``.

    Raises:
        ImportError: On attribute access, when the module cannot be imported.
    """

    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attribute: str) -> Any:
        if attribute.startswith("__"):
            raise AttributeError(attribute)
        return getattr(importlib.import_module(self._name), attribute)

    def __repr__(self) -> str:
        return f"<LazyModule {self._name!r}>"
