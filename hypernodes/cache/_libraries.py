"""Fingerprint handlers for library types, registered the first time they can be needed.

Each ``_register_*`` runs once its module is already imported by someone else (a value of
a type can only exist once its module is imported), so fingerprinting never imports
numpy, pandas or pydantic, and ``import hypernodes`` stays light.
"""

from __future__ import annotations

from typing import Any

from ._encoding import EXACT, Writer, feed, feed_bytes, feed_ref, handler, mapping, sequence
from ._objects import LAZY, object_fields, reduced

__all__: list[str] = []


def _register_datetime(datetime: Any) -> None:
    # Pickle's own state bytes (which include ``fold``) plus the tzinfo.
    for cls in (datetime.datetime, datetime.date, datetime.time, datetime.timedelta):
        EXACT[cls] = reduced
    EXACT[datetime.timezone] = reduced


def _register_decimal(decimal: Any) -> None:
    def encode(v: Any, w: Writer) -> None:
        w.b += b"x"
        feed(str(v), w)  # str() keeps the exponent: Decimal("1.0") and ("1.00") differ

    EXACT[decimal.Decimal] = encode


def _register_fractions(fractions: Any) -> None:
    def encode(v: Any, w: Writer) -> None:
        w.b += b"v"
        feed((v.numerator, v.denominator), w)

    EXACT[fractions.Fraction] = encode


def _register_uuid(uuid: Any) -> None:
    def encode(v: Any, w: Writer) -> None:
        w.b += b"w"
        w.b += v.bytes

    EXACT[uuid.UUID] = encode


def _register_pathlib(pathlib: Any) -> None:
    def encode(v: Any, w: Writer) -> None:
        w.b += b"p"
        feed_ref(type(v), w)
        feed(str(v), w)

    for name in ("PurePosixPath", "PureWindowsPath", "PosixPath", "WindowsPath"):
        EXACT[getattr(pathlib, name)] = encode


def _register_collections(collections: Any) -> None:
    def ordered(v: Any, w: Writer) -> None:  # OrderedDict equality is order-sensitive
        w.b += b"O"
        sequence(b"t", list(v.items()), w)

    def default(v: Any, w: Writer) -> None:
        w.b += b"V"
        feed(v.default_factory, w)
        mapping(b"d", v, w)

    def deque(v: Any, w: Writer) -> None:
        w.b += b"Q"
        feed(v.maxlen, w)
        sequence(b"l", v, w)

    def counter(v: Any, w: Writer) -> None:
        w.b += b"C"
        mapping(b"d", v, w)

    EXACT[collections.OrderedDict] = ordered
    EXACT[collections.defaultdict] = default
    EXACT[collections.deque] = deque
    EXACT[collections.Counter] = counter


def _raw(np: Any, a: Any) -> memoryview:
    """The bytes of a C-contiguous array's memory: a cast of its buffer (one object; the
    common case), else a flat uint8 view (dtypes numpy exports no buffer for, such as
    datetimes; and empty arrays, which a cast refuses). The same bytes either way."""
    if a.size:
        try:
            return memoryview(a).cast("B")
        except (TypeError, ValueError):
            pass
    return memoryview(a.reshape(-1).view(np.uint8))


def _register_numpy(np: Any) -> None:
    heads: dict[Any, bytes] = {}  # plain dtype -> its "A", str and descr, encoded

    def array(a: Any, w: Writer) -> None:
        dtype = a.dtype
        head = heads.get(dtype)
        if head is None:
            first = Writer()
            first.b += b"A"
            feed(dtype.str, first)
            feed(dtype.descr if dtype.names is not None else None, first)
            head = bytes(first.b)
            if dtype.names is None and len(heads) < 64:  # (plain dtypes: fields vary)
                heads[dtype] = head
        w.b += head
        feed(a.shape, w)
        if dtype.hasobject:
            w.b += b"*"
            feed(a.tolist(), w)  # Python objects: element by element, in C order
            return
        contiguous = a if a.flags.c_contiguous else np.ascontiguousarray(a)
        # The array's own memory as bytes: hashed in place, never copied.
        feed_bytes(b"b", _raw(np, contiguous), w)

    def scalar(s: Any, w: Writer) -> None:
        w.b += b"a"
        feed(s.dtype.str, w)
        if s.dtype.hasobject:
            feed(s.item(), w)
        else:
            feed_bytes(b"b", s.tobytes(), w)

    EXACT[np.ndarray] = array  # subclasses (masked arrays, ...) keep their extra state
    handler.register(np.generic, scalar)  # via their pickle reduction


def _register_pandas(pd: Any) -> None:
    import numpy as np  # pandas imports it first

    def values(obj: Any, w: Writer) -> None:
        """The values of a Series or an Index, with their dtype."""
        dtype = obj.dtype
        feed(str(dtype), w)
        if isinstance(dtype, np.dtype):
            feed(obj.to_numpy(), w)
        elif isinstance(dtype, pd.CategoricalDtype):
            cat = obj.array
            w.b += b"c"
            feed((cat.categories, bool(cat.ordered), cat.codes), w)
        elif isinstance(i8 := getattr(obj.array, "asi8", None), np.ndarray):
            w.b += b"8"  # datetimes with a timezone, periods, timedeltas: int64 ticks
            feed((i8, np.asarray(obj.isna())), w)
        else:
            w.b += b"*"
            feed(np.asarray(obj.array, dtype=object), w)

    def index(ix: Any, w: Writer) -> None:
        w.b += b"X"
        feed_ref(type(ix), w)
        feed(tuple(ix.names), w)
        if isinstance(ix, pd.RangeIndex):
            feed((ix.start, ix.stop, ix.step), w)
        elif isinstance(ix, pd.MultiIndex):
            feed((list(ix.levels), [np.asarray(c) for c in ix.codes]), w)
        else:
            values(ix, w)

    def series(s: Any, w: Writer) -> None:
        w.b += b"S"
        feed_ref(type(s), w)
        feed(s.name, w)
        index(s.index, w)
        values(s, w)
        feed(dict(s.attrs), w)

    def frame(df: Any, w: Writer) -> None:
        w.b += b"D"
        feed_ref(type(df), w)
        index(df.columns, w)
        index(df.index, w)
        w.b += b"%x[" % df.shape[1]
        for i in range(df.shape[1]):  # by position: column labels may repeat
            values(df.iloc[:, i], w)
        feed(dict(df.attrs), w)

    handler.register(pd.Index, index)
    handler.register(pd.Series, series)
    handler.register(pd.DataFrame, frame)


def _register_pydantic(pydantic: Any) -> None:
    base = getattr(pydantic, "BaseModel", None)
    if base is None or not hasattr(base, "model_fields"):
        return  # pydantic v1: models go through their pickle reduction

    def model(v: Any, w: Writer) -> None:
        fields = sorted(v.__dict__.items())
        fields.append(("__pydantic_extra__", getattr(v, "__pydantic_extra__", None)))
        fields.append(("__pydantic_private__", getattr(v, "__pydantic_private__", None)))
        object_fields(b"P", v, w, fields)

    handler.register(base, model)


LAZY.update(
    {
        "datetime": _register_datetime,
        "decimal": _register_decimal,
        "fractions": _register_fractions,
        "uuid": _register_uuid,
        "pathlib": _register_pathlib,
        "collections": _register_collections,
        "numpy": _register_numpy,
        "pandas": _register_pandas,
        "pydantic": _register_pydantic,
    }
)
