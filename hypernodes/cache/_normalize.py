"""What of a function's text and bytecode counts in its code identity: comments,
docstrings, blank lines, formatting and line numbers do not.

The source is parsed and dumped without positions or docstrings (a fragment that does not
parse, like a lambda cut out of a longer line, falls back to its tokens without comments
and line breaks). The bytecode, there to tell the running code from a file edited since
it was imported, is read instruction by instruction, dropping what follows line layout:
``NOP`` placeholders, ``EXTENDED_ARG`` prefixes, jumps, the exception table (instruction
offsets); Python 3.13's fused ``LOAD_FAST_LOAD_FAST``-style instructions, formed only
within one line, are split. Constants are taken by value, so a docstring that no
instruction loads is left out. Should a compiler still lay out a reformatted function
differently, the result is a miss, never a wrong hit.

Both are computed once per code object or class by the callers (``_bytecode``), never on
the lookup path. Every parse HyperNodes makes holds :data:`PARSE_LOCK`: on Python 3.11,
two threads parsing at once can fail with ``SystemError: AST constructor recursion depth
mismatch`` (the depth is counted per interpreter, CPython gh-106905), as two runs computing
code identities in two threads did. This module must not import the rest of HyperNodes
except the cache's own helpers.
"""

from __future__ import annotations

import ast
import dis
import io
import textwrap
import threading
import tokenize
import types
from typing import Any

__all__ = ["PARSE_LOCK", "normalized_instructions", "normalized_source"]

PARSE_LOCK = threading.RLock()
"""Held by every parse into a syntax tree here and by ``inspect.getsource`` of a class
(which parses its module's file), so no two threads of this process parse at once."""

# -- source ----------------------------------------------------------------------------

_WITH_DOCSTRING = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Module)
_BODIES = ("body", "orelse", "finalbody", "handlers", "cases")
_LAYOUT_TOKENS = frozenset(
    {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT}
)


def _parse(source: str) -> ast.Module | None:
    # A method's or a nested function's source is indented; a multi-line string inside it
    # can defeat dedent, which the ``if 1:`` wrapper does not mind.
    for text in (textwrap.dedent(source), "if 1:\n" + source):
        try:
            with PARSE_LOCK:
                return ast.parse(text)
        except (SyntaxError, ValueError):  # ValueError: a NUL byte in the source
            continue
    return None


def _strip_docstrings(tree: ast.Module) -> None:
    # Statements only: a docstring opens a def or class body, which only statements hold.
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, _WITH_DOCSTRING) and node.body:
            first = node.body[0]
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                node.body = node.body[1:]
        for field in _BODIES:
            inner = getattr(node, field, None)
            if inner:
                stack.extend(inner)


def _tokens(source: str) -> str:
    """The tokens of a fragment, without comments, indentation and line breaks."""
    out: list[str] = ["T"]
    try:
        # (extend keeps the tokens read before an error)
        tokens = tokenize.generate_tokens(io.StringIO(source).readline)
        out.extend(tok.string for tok in tokens if tok.type not in _LAYOUT_TOKENS)
    except (tokenize.TokenError, SyntaxError):  # the fragment ends inside brackets
        out.append("\0")
    return "\x1f".join(out)


def normalized_source(source: str) -> str:
    """``source`` with comments, docstrings, blank lines and formatting normalised away:
    the dump of its syntax tree without positions, or its tokens when it does not parse
    on its own."""
    tree = _parse(source)
    if tree is None:
        return _tokens(source)
    _strip_docstrings(tree)
    return "A" + ast.dump(tree, annotate_fields=False)


# -- bytecode --------------------------------------------------------------------------

_EXTENDED_ARG = dis.opmap["EXTENDED_ARG"]
_FUSED = {  # Python 3.13 fuses two of these when, and only when, they share a line
    dis.opmap[fused]: (dis.opmap[first], dis.opmap[second])
    for fused, first, second in (
        ("LOAD_FAST_LOAD_FAST", "LOAD_FAST", "LOAD_FAST"),
        ("STORE_FAST_LOAD_FAST", "STORE_FAST", "LOAD_FAST"),
        ("STORE_FAST_STORE_FAST", "STORE_FAST", "STORE_FAST"),
    )
    if fused in dis.opmap
}
_CONST_OPS = frozenset(dis.hasconst)
_JUMP_OPS = frozenset(getattr(dis, "hasjump", ())) | frozenset(dis.hasjrel) | frozenset(dis.hasjabs)
_SKIPPED = _JUMP_OPS | {dis.opmap["NOP"], dis.opmap.get("CACHE", -1)}


def normalized_instructions(code: types.CodeType, const: Any) -> tuple[Any, ...]:
    """The instructions of ``code`` as ``(opcode, argument)`` pairs, free of line numbers.

    ``const`` maps a constant loaded by an instruction to what stands for it (nested code
    objects become digests). Jumps are left out: which way a conditional jumps, and
    whether another jump follows, depends on line layout (3.12 does not thread a jump
    into a block of another line), and the edits that change control flow also change
    the syntax tree that the source digest covers.
    """
    # Read from co_code directly: ``dis.get_instructions`` costs ten times as much.
    consts = code.co_consts
    raw = code.co_code
    out: list[Any] = []
    extended = 0
    for i in range(0, len(raw), 2):
        op = raw[i]
        arg = raw[i + 1] | extended
        if op == _EXTENDED_ARG:
            extended = arg << 8
            continue
        extended = 0
        if op in _SKIPPED:
            continue
        if op in _CONST_OPS:
            # By value: an index shifts with the docstring's slot (3.11 keeps one).
            out.append((op, const(consts[arg])))
        elif op in _FUSED:
            first, second = _FUSED[op]
            out.append((first, arg >> 4))
            out.append((second, arg & 15))
        else:
            out.append((op, arg))
    return tuple(out)
