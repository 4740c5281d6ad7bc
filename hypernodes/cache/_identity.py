"""What cache keys are made of: a node's identity (its code and structure) and the
versions of values (their fingerprints, or versions derived from a key when a value is
not at hand or cannot be fingerprinted). ``runtime`` builds keys from them."""

from __future__ import annotations

from typing import Any

from ._hashing import digest128
from .base import UnfingerprintableError
from .code import code_identity
from .fingerprint import fingerprint, fingerprint_text

__all__ = [
    "DERIVED",
    "FINGERPRINT_LENGTH",
    "OPAQUE",
    "Unversioned",
    "is_derived",
    "digest",
    "node_identity",
    "output_text",
    "output_version",
    "structure",
]

FINGERPRINT_LENGTH = 32
DERIVED = ">"  # key + ">" + name: an output whose value was not at hand (pre-resolved)
OPAQUE = ":"  # key + ":" + name: an output that cannot be fingerprinted


class Unversioned:
    """Marks a value that could not be fingerprinted (and why), so we warn only when used."""

    __slots__ = ("type_name",)

    def __init__(self, type_name: str) -> None:
        self.type_name = type_name


def digest(*parts: str) -> str:
    return digest128("\x1f".join(parts).encode()).hex()


def node_identity(node: Any) -> str:
    """The identity of a node: its code (and helpers') plus its structure.

    For a nested pipeline node, the identities of every inner node, the inner pipeline's
    bound values and the node's mappings: stable across processes, never an address.

    Raises:
        UnfingerprintableError: The code or a bound value cannot be fingerprinted.
    """
    inner = getattr(node, "pipeline", None)
    if inner is None:
        return structure(code_identity(node.func), node)
    parts = ["pipeline", repr(node.outputs), ",".join(node.inputs)]
    parts.append(repr(sorted(node.input_mapping.items())))
    parts.append(repr(sorted(node.output_mapping.items())))
    parts.append(repr((node.map_over, node.map_mode)))
    parts.extend(node_identity(n) for n in inner.nodes)
    parts.extend(f"{k}={fingerprint(v)}" for k, v in sorted(inner.bound.items()))
    return digest(*parts)


def structure(code: str, node: Any) -> str:
    return digest("node", code, repr(node.output_name), ",".join(node.inputs))


def output_version(value: Any, key: str, name: str) -> str:
    """An output's version: its fingerprint, or (it has none) one derived from its key."""
    try:
        return fingerprint(value)
    except UnfingerprintableError:
        return key + OPAQUE + name


def output_text(value: Any, key: str, name: str) -> tuple[str, bytes | None]:
    """:func:`output_version`, and the text of a list of strs (see ``fingerprint_text``)."""
    if type(value) is not list:
        return output_version(value, key, name), None
    try:
        return fingerprint_text(value)
    except UnfingerprintableError:
        return key + OPAQUE + name, None


def is_derived(version: object) -> bool:
    """Whether ``version`` was derived from a key before the value existed."""
    return (
        type(version) is str
        and len(version) > FINGERPRINT_LENGTH
        and version[FINGERPRINT_LENGTH] == DERIVED
    )
