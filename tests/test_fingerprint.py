"""Fingerprints: every supported type, equal values alike, different values apart."""

from __future__ import annotations

import collections
import copy
import dataclasses
import datetime
import decimal
import enum
import fractions
import itertools
import math
import os
import pathlib
import pickle
import socket
import struct
import subprocess
import sys
import threading
import tracemalloc
import typing
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hypernodes.cache import UnfingerprintableError, fingerprint, register_fingerprint

np = pytest.importorskip("numpy")
pd = pytest.importorskip("pandas")
pydantic = pytest.importorskip("pydantic")


class Color(enum.Enum):
    RED = 1
    BLUE = 2


class Level(enum.IntEnum):
    LOW = 1


class Pair(typing.NamedTuple):
    a: int
    b: str


@dataclasses.dataclass
class Point:
    x: float
    y: list[int]


@dataclasses.dataclass
class OtherPoint:
    x: float
    y: list[int]


class Model(pydantic.BaseModel):
    name: str
    tags: list[str] = []


class Plain:
    def __init__(self, a: Any, b: Any) -> None:
        self.a = a
        self.b = b


class Slotted:
    __slots__ = ("a", "b")

    def __init__(self, a: Any, b: Any) -> None:
        self.a = a
        self.b = b


def function_value(x: int) -> int:
    return x + 1


def many_values() -> list[Any]:
    """One value of every supported kind (and close relatives that must stay apart)."""
    return [
        None, True, False, 0, 1, -1, 2**70, 10**5000, 1.0, 0.0, -0.0, math.inf, math.nan,
        1j, complex(1, -0.0), "", "1", "é", "\ud800", b"", b"1", bytearray(b"1"),
        memoryview(b"12"), memoryview(b"1234").cast("H"), (), (1,), [], [1], [[1]], ((1,),),
        {}, {"a": 1}, {"a": 1.0}, {1: "a"}, {(1, 2): None}, set(), {1}, frozenset(), frozenset({1}),
        {"1"}, range(3), range(0, 3, 2), slice(1, 2), ..., NotImplemented, int, float, Point,
        Color.RED, Color.BLUE, Level.LOW,
        datetime.datetime(2024, 1, 1), datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC),
        datetime.datetime(2024, 1, 1, fold=1), datetime.date(2024, 1, 1), datetime.time(1),
        datetime.timedelta(1), decimal.Decimal("1.0"), decimal.Decimal("1.00"),
        fractions.Fraction(1, 3), pathlib.PurePosixPath("/a"), pathlib.Path("/a"),
        pathlib.PureWindowsPath("a"), uuid.UUID(int=1),
        collections.OrderedDict(a=1, b=2), collections.OrderedDict(b=2, a=1),
        collections.defaultdict(list, a=[1]), collections.defaultdict(set, a=[1]),
        collections.deque([1]), collections.deque([1], maxlen=3), collections.Counter("ab"),
        Pair(1, "x"), (1, "x"), Point(1.0, [2]), OtherPoint(1.0, [2]), Point(1.0, [3]),
        Model(name="a"), Model(name="a", tags=["t"]), Plain(1, 2), Plain(1, 3), Slotted(1, 2),
        np.arange(3), np.arange(3, dtype=np.int32), np.arange(3.0), np.arange(6).reshape(2, 3),
        np.arange(6).reshape(3, 2), np.zeros((0, 3)), np.zeros((3, 0)), np.float64(1.0),
        np.int64(1), np.array(1), np.array(["a", None], dtype=object), np.bool_(True),
        np.array(["2024-01-01"], dtype="datetime64[ns]"),
        np.ma.masked_array([1, 2], mask=[0, 1]), np.ma.masked_array([1, 2], mask=[1, 0]),
        pd.DataFrame({"a": [1, 2]}), pd.DataFrame({"a": [1.0, 2.0]}),
        pd.DataFrame({"b": [1, 2]}), pd.DataFrame({"a": [1, 2]}, index=[5, 6]),
        pd.Series([1, 2]), pd.Series([1, 2], name="s"), pd.Index([1, 2]), pd.RangeIndex(2),
        pd.Series(pd.Categorical(["a", "b"])), pd.Series(["a", "b"]),
        pd.Series([1, None], dtype="Int64"), pd.Timestamp("2024-01-01"),
        pd.Timestamp("2024-01-01 00:00:00.000000001"),
        pd.Series(pd.date_range("2024", periods=2, tz="UTC")),
        pd.MultiIndex.from_tuples([(1, "a"), (2, "b")]), function_value, len,
    ]  # fmt: skip


def test_every_supported_value_has_a_fingerprint_and_all_differ() -> None:
    values = many_values()
    seen: dict[str, Any] = {}
    for value in values:
        fp = fingerprint(value)
        assert len(fp) == 32 and int(fp, 16) >= 0
        assert fp not in seen, f"{value!r} collides with {seen[fp]!r}"
        seen[fp] = value
        assert fingerprint(value) == fp  # stable
    assert len(seen) == len(values)


@pytest.mark.parametrize("value", many_values(), ids=lambda v: type(v).__name__)
def test_an_equal_copy_has_the_same_fingerprint(value: Any) -> None:
    if isinstance(value, memoryview | type(len)) or value is function_value:
        return  # not deep-copyable / by reference
    assert fingerprint(copy.deepcopy(value)) == fingerprint(value)


def test_numbers_of_different_types_stay_apart() -> None:
    fps = {fingerprint(v) for v in (1, 1.0, True, decimal.Decimal(1), "1", Level.LOW, 1 + 0j)}
    assert len(fps) == 7
    assert fingerprint(0) != fingerprint(False)


def test_containers_of_different_types_stay_apart() -> None:
    fps = {fingerprint(v) for v in ([1, 2], (1, 2), {1, 2}, frozenset({1, 2}), Pair(1, "2"))}
    assert len(fps) == 5
    assert fingerprint({"a": 1}) != fingerprint(collections.OrderedDict(a=1))
    assert fingerprint(b"ab") != fingerprint(bytearray(b"ab"))


def test_floats_edge_cases() -> None:
    assert fingerprint(0.0) != fingerprint(-0.0)  # 1/x tells them apart
    negative_nan = struct.unpack("<d", struct.pack("<Q", 0xFFF8000000000001))[0]
    assert fingerprint(math.nan) == fingerprint(float("nan")) == fingerprint(negative_nan)
    assert fingerprint([math.nan, 1.0, 2.0, 3.0]) == fingerprint([negative_nan, 1.0, 2.0, 3.0])
    assert fingerprint(0.1 + 0.2) != fingerprint(0.3)


def test_long_homogeneous_lists_encode_like_element_by_element() -> None:
    # The batched path for long lists of one scalar type must agree with the general one.
    for items in ([1, 2, 3, 4, 5], [1.0, 2.5, math.nan, -0.0], ["a", "bb", "", "é"]):
        mixed = [*items, None]
        assert fingerprint(items) != fingerprint(mixed)
        assert fingerprint(tuple(items)) == fingerprint(tuple(items))
    assert fingerprint([1, 2, 3, 4]) != fingerprint([1, 2, 3, 4.0])


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (["as", "b"], ["a", "sb"]),
        (["a", "s1:b"], ["as1:", "b"]),
        ([b"a", b"b"], [b"ab", b""]),
        ([[1], 2], [[1, 2]]),
        ([0x12], [0x1, 0x2]),
        ({"ab": "c"}, {"a": "bc"}),
        ({"a": ["b"]}, {"a": "b"}),
        (("a", ("b",)), (("a", "b"),)),
        ([1.5, 2.5], [(1.5, 2.5)]),
        (list(range(20)), [*range(19), [19]]),
        (["x"] * 20, ["x"] * 19 + ["xx"]),
        # Runs of 16+ strs are joined by NULs unless one holds a NUL: never ambiguous.
        (["a\0b"] + ["c"] * 19, ["a", "b\0c"] + ["c"] * 18),
        (["a\0b"] + ["c"] * 19, ["a", "b"] + ["c"] * 18),
        (["a", "b"] + ["c"] * 18, ["a", "b\0"] + ["c"] * 18),
        ({f"k{i}": i for i in range(20)}, {f"k{i}": i for i in range(19)} | {"k1\0": 19}),
        ({"k": list(range(20))}, {"k": list(range(21))}),
    ],
)
def test_boundaries_are_never_lost(a: Any, b: Any) -> None:
    assert fingerprint(a) != fingerprint(b)


def test_dicts_are_order_insensitive_sets_too() -> None:
    assert fingerprint({"a": 1, "b": 2}) == fingerprint({"b": 2, "a": 1})
    assert fingerprint({1: "a", (2,): "b", None: 3}) == fingerprint({None: 3, (2,): "b", 1: "a"})
    assert fingerprint({1: "a"}) != fingerprint({1: "b"})
    assert fingerprint({"a": 1}) != fingerprint({"a": 2}) != fingerprint({"b": 1})
    assert fingerprint({3, 1, 2}) == fingerprint({1, 2, 3})
    assert fingerprint({1.5, "x", (1,)}) == fingerprint({(1,), "x", 1.5})


HASH_SEED_VALUES = """
from hypernodes.cache import fingerprint
values = [
    {"apple", "banana", "cherry", "date", "elderberry"},
    frozenset({("a", 1), ("b", 2), ("c", 3)}),
    {"x": {1, 2, 3}, 2: frozenset({"p", "q"}), ("t",): [{"z", "y"}]},
    {1.5, "mixed", (2, "t"), None, b"b"},
]
print(",".join(fingerprint(v) for v in values))
"""


def test_sets_and_dicts_are_stable_across_hash_seeds() -> None:
    root = str(Path(__file__).resolve().parent.parent)
    outputs = set()
    for seed in ("0", "1", "98765"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": root}
        proc = subprocess.run(
            [sys.executable, "-c", HASH_SEED_VALUES],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
        outputs.add(proc.stdout.strip())
    namespace: dict[str, Any] = {}
    exec(HASH_SEED_VALUES.replace("\nprint(", "\nresult = ("), namespace)
    assert outputs == {namespace["result"]}


# -- numpy, pandas, pydantic, dataclasses ---------------------------------------------------


def test_arrays_differing_in_one_element_out_of_5000_differ() -> None:
    # hypernodes 0.4.8 falls back to repr(), which elides the middle of large arrays.
    a = np.zeros(5000)
    b = a.copy()
    b[2500] = 1e-12
    assert repr(a) == repr(b)
    assert fingerprint(a) != fingerprint(b)


def test_arrays_equal_in_value_are_alike_whatever_their_memory_layout() -> None:
    c = np.arange(12.0).reshape(3, 4)
    f = np.asfortranarray(c)
    assert fingerprint(c) == fingerprint(f)
    strided = np.arange(24.0)[::2]
    assert fingerprint(strided) == fingerprint(strided.copy())
    assert fingerprint(c.T) == fingerprint(np.ascontiguousarray(c.T))
    assert fingerprint(c) != fingerprint(c.T)


def test_arrays_record_dtype_shape_and_structure() -> None:
    assert fingerprint(np.zeros(4, "<f8")) != fingerprint(np.zeros(4, "<i8"))
    assert fingerprint(np.zeros(4)) != fingerprint(np.zeros((2, 2)))
    rec = np.array([(1, 2.0)], dtype=[("a", "i4"), ("b", "f8")])
    renamed = np.array([(1, 2.0)], dtype=[("x", "i4"), ("b", "f8")])
    assert fingerprint(rec) != fingerprint(renamed)
    objs = np.array([{"k": 1}, [1, 2]], dtype=object)
    assert fingerprint(objs) == fingerprint(np.array([{"k": 1}, [1, 2]], dtype=object))
    assert fingerprint(objs) != fingerprint(np.array([{"k": 2}, [1, 2]], dtype=object))


def test_a_large_array_is_hashed_in_place_without_a_copy() -> None:
    big = np.random.default_rng(0).random(6_000_000)  # 48 MB
    tracemalloc.start()
    try:
        fingerprint(big)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000, peak


def test_pandas_objects_cover_values_index_columns_and_dtypes() -> None:
    df = pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "z"]})
    assert fingerprint(df) == fingerprint(df.copy())
    changed = df.copy()
    changed.loc[1, "a"] = 20
    assert fingerprint(changed) != fingerprint(df)
    assert fingerprint(df[["b", "a"]]) != fingerprint(df)
    assert fingerprint(df.set_axis([7, 8, 9])) != fingerprint(df)
    assert fingerprint(df.astype({"a": "float64"})) != fingerprint(df)
    assert fingerprint(df.rename(columns={"a": "c"})) != fingerprint(df)
    dup = pd.DataFrame([[1, 2]], columns=["a", "a"])
    assert fingerprint(dup) != fingerprint(pd.DataFrame([[2, 1]], columns=["a", "a"]))
    cat = pd.Series(pd.Categorical(["a", "b"], categories=["a", "b", "c"]))
    assert fingerprint(cat) != fingerprint(pd.Series(pd.Categorical(["a", "b"])))
    with_attrs = df.copy()
    with_attrs.attrs["source"] = "s3"
    assert fingerprint(with_attrs) != fingerprint(df)


def test_pydantic_models_cover_type_and_fields() -> None:
    class Other(pydantic.BaseModel):
        name: str
        tags: list[str] = []

    assert fingerprint(Model(name="a")) == fingerprint(Model(name="a"))
    assert fingerprint(Model(name="a")) != fingerprint(Model(name="b"))
    assert fingerprint(Model(name="a")) != fingerprint(Other(name="a"))


def test_dataclasses_named_tuples_and_plain_objects() -> None:
    assert fingerprint(Point(1.0, [1])) == fingerprint(Point(1.0, [1]))
    assert fingerprint(Point(1.0, [1])) != fingerprint(OtherPoint(1.0, [1]))
    assert fingerprint(Pair(1, "a")) != fingerprint((1, "a"))
    assert fingerprint(Plain(1, [2])) == fingerprint(Plain(1, [2]))
    assert fingerprint(Plain(1, [2])) != fingerprint(Plain(1, [3]))
    assert fingerprint(Slotted(1, 2)) != fingerprint(Slotted(1, 3))

    @dataclasses.dataclass
    class Lazy:
        a: int
        b: int = dataclasses.field(init=False)

    assert fingerprint(Lazy(1)) == fingerprint(Lazy(1))  # an unset field is fine


# -- depth and cycles ------------------------------------------------------------------------


def nested(depth: int, leaf: Any) -> Any:
    value: Any = leaf
    for i in range(depth):
        value = {"level": i, "child": [value]}
    return value


def test_structures_differing_at_depth_50_differ() -> None:
    # Hamilton's fingerprints collide below its depth limit.
    assert fingerprint(nested(50, 1)) != fingerprint(nested(50, 2))
    assert fingerprint(nested(50, 1)) == fingerprint(nested(50, 1))
    assert fingerprint(nested(300, "a")) != fingerprint(nested(300, "b"))


def test_deeper_than_the_recursion_limit_still_works() -> None:
    def deep(n: int, leaf: int) -> Any:
        value: Any = leaf
        for _ in range(n):
            value = [value]
        return value

    depth = sys.getrecursionlimit() * 2
    assert fingerprint(deep(depth, 1)) != fingerprint(deep(depth, 2))
    assert sys.getrecursionlimit() == depth // 2  # restored


def test_absurdly_deep_is_unfingerprintable_not_a_crash() -> None:
    deep: Any = []
    for _ in range(50_000):
        deep = [deep]
    with pytest.raises(UnfingerprintableError, match="frames deep"):
        fingerprint(deep)


def test_cycles_become_back_references() -> None:
    def cyclic(tail: int) -> list[Any]:
        a: list[Any] = [1]
        a.append({"self": a, "tail": tail})
        return a

    assert fingerprint(cyclic(1)) == fingerprint(cyclic(1))
    assert fingerprint(cyclic(1)) != fingerprint(cyclic(2))
    node = Plain(1, None)
    node.b = node
    assert fingerprint(node) == fingerprint(node)
    shared = [1]
    assert fingerprint([shared, shared]) == fingerprint([[1], [1]])  # aliasing is not cycles


# -- what cannot be fingerprinted -------------------------------------------------------------


def gen() -> Any:
    yield 1


@pytest.mark.parametrize(
    ("make", "type_name"),
    [
        (threading.Lock, "_thread.lock"),
        (threading.RLock, "_thread.RLock"),
        (gen, "generator"),
        (lambda: socket.socket(), "socket.socket"),
        (lambda: open(__file__), "_io.TextIOWrapper"),  # noqa: SIM115 - closed below
        (lambda: sys, "module"),
    ],
)
def test_unfingerprintable_values_raise_naming_the_type(make: Any, type_name: str) -> None:
    value = make()
    try:
        with pytest.raises(UnfingerprintableError) as info:
            fingerprint({"outer": [1, value]})
        err = info.value
        assert isinstance(err, TypeError)
        assert err.type_name == type_name
        assert err.location == "value['outer'][1]"
        assert f"type {type_name} at value['outer'][1]" in str(err)
        assert "register_fingerprint" in str(err) and "cache=False" in str(err)
        assert pickle.loads(pickle.dumps(err)).location == err.location
    finally:
        if hasattr(value, "close"):
            value.close()


def test_the_location_names_attributes_of_objects() -> None:
    with pytest.raises(UnfingerprintableError) as info:
        fingerprint([Point(1.0, [threading.Lock()])])  # type: ignore[list-item]
    assert info.value.location == "value[0].y[0]"


def test_fingerprint_never_calls_repr_or_str() -> None:
    class Touchy:
        def __init__(self, n: int) -> None:
            self.n = n

        def __repr__(self) -> str:
            raise AssertionError("repr called")

        __str__ = __repr__

        def __hash__(self) -> int:
            raise AssertionError("hash called")

    assert fingerprint([Touchy(1), {"k": Touchy(2)}]) != fingerprint([Touchy(1), {"k": Touchy(3)}])

    class TouchyLocked(Touchy):
        def __init__(self) -> None:
            super().__init__(0)
            self.lock = threading.Lock()

    with pytest.raises(UnfingerprintableError, match=r"_thread\.lock"):
        fingerprint(TouchyLocked())


# -- user registrations -----------------------------------------------------------------------


class Handle:
    """An object pickle refuses, but that users can describe."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.lock = threading.Lock()


class SubHandle(Handle):
    pass


class OtherHandle(Handle):
    pass


def test_a_user_registered_type() -> None:
    with pytest.raises(UnfingerprintableError):
        fingerprint(Handle("a"))
    reducer = register_fingerprint(Handle, lambda h: h.name)
    assert reducer(Handle("x")) == "x"
    assert fingerprint(Handle("a")) == fingerprint(Handle("a"))
    assert fingerprint(Handle("a")) != fingerprint(Handle("b"))
    assert fingerprint(Handle("a")) != fingerprint("a")  # the type is mixed in
    assert fingerprint(SubHandle("a")) == fingerprint(Handle("a"))  # nearest registered base

    @register_fingerprint(OtherHandle)
    def _(h: OtherHandle) -> object:
        return ("other", h.name)

    assert fingerprint(OtherHandle("a")) != fingerprint(Handle("a"))


def test_a_registered_reducer_that_raises_is_unfingerprintable() -> None:
    class Broken:
        pass

    def reducer(value: Broken) -> object:
        raise ValueError("nope")

    register_fingerprint(Broken, reducer)
    with pytest.raises(UnfingerprintableError, match="registered fingerprint function raised"):
        fingerprint([Broken()])


def test_register_needs_a_class() -> None:
    with pytest.raises(TypeError, match="needs a class"):
        register_fingerprint(Handle("x"))  # type: ignore[call-overload]


# -- functions as values, laziness, the fallback hash --------------------------------------


def test_functions_are_fingerprinted_by_code() -> None:
    def make(k: int) -> Any:
        return lambda x: x + k

    assert fingerprint(make(1)) == fingerprint(make(1))
    assert fingerprint(make(1)) != fingerprint(make(2))
    assert fingerprint(function_value) != fingerprint(len)


def test_importing_the_cache_does_not_import_optional_libraries(run_python: Any) -> None:
    proc = run_python(
        """
        import sys
        import hypernodes.cache
        from hypernodes.cache import fingerprint
        fingerprint({"a": [1, 2.0, "x"]})
        print(sorted(m for m in ("numpy", "pandas", "pydantic") if m in sys.modules))
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_without_xxhash_everything_still_works(run_python: Any, tmp_path: Path) -> None:
    proc = run_python(
        f"""
        import sys, warnings
        sys.modules["xxhash"] = None  # as if it were not installed
        warnings.simplefilter("error")
        from hypernodes.cache import DiskCache, fingerprint
        from hypernodes.cache._hashing import ALGORITHM
        assert ALGORITHM == "blake2b-128", ALGORITHM
        assert fingerprint({{"a": 1}}) == fingerprint({{"a": 1}}) != fingerprint({{"a": 2}})
        cache = DiskCache({str(tmp_path)!r})
        cache.put("k", [1, 2])
        assert cache.get("k") == [1, 2]
        print("ok")
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


# -- properties --------------------------------------------------------------------------------

# A tiny alphabet made of the encoding's own tag and separator characters: concatenated
# strings and bytes then collide often if the encoding ever loses a boundary.
_TRICKY = "s:i;b1a"
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-20, max_value=20)
    | st.integers()
    | st.floats(allow_nan=True)
    | st.text(alphabet=_TRICKY, max_size=4)
    | st.text(max_size=5)
    | st.text(alphabet=_TRICKY, max_size=4).map(str.encode)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.lists(inner, max_size=5).map(tuple)
        | st.dictionaries(st.text(alphabet=_TRICKY, max_size=3) | st.integers(), inner, max_size=5)
        | st.frozensets(st.integers() | st.text(alphabet=_TRICKY, max_size=3), max_size=5)
    ),
    max_leaves=25,
)


def rebuilt(value: Any) -> Any:
    """An equal value built anew, with every dict's insertion order reversed."""
    if isinstance(value, list):
        return [rebuilt(v) for v in value]
    if isinstance(value, tuple):
        return tuple(rebuilt(v) for v in value)
    if isinstance(value, dict):
        return {k: rebuilt(value[k]) for k in reversed(list(value))}
    if isinstance(value, frozenset):
        return frozenset(reversed(list(value)))
    if isinstance(value, float):
        return float(repr(value)) if value == value else float("nan")
    return copy.copy(value)


def strictly_equal(a: Any, b: Any) -> bool:
    """Equal values of identical types all the way down (NaN equals NaN, -0.0 != 0.0)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (a != a and b != b) or struct.pack("<d", a) == struct.pack("<d", b)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(strictly_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(
            any(type(k) is type(k2) and k == k2 for k2 in b) and strictly_equal(a[k], b[k])
            for k in a
        )
    return bool(a == b)


@settings(max_examples=300, deadline=None)
@given(values)
def test_equal_values_have_equal_fingerprints(value: Any) -> None:
    fp = fingerprint(value)
    assert fingerprint(rebuilt(value)) == fp
    assert fingerprint(pickle.loads(pickle.dumps(value))) == fp


@settings(max_examples=300, deadline=None)
@given(values, values)
def test_equal_fingerprints_mean_equal_values(a: Any, b: Any) -> None:
    if fingerprint(a) == fingerprint(b):
        assert strictly_equal(a, b)
    else:
        assert not strictly_equal(a, b)


def resplit(joined: Any, cuts: list[int]) -> list[Any]:
    bounds = [0, *sorted(cuts), len(joined)]
    return [joined[i:j] for i, j in itertools.pairwise(bounds)]


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.lists(st.text(alphabet=_TRICKY, max_size=4), max_size=6),
        st.lists(st.text(alphabet=_TRICKY + "\0", max_size=3), min_size=15, max_size=20),
    ),
    st.data(),
)
def test_the_same_characters_split_differently_never_collide(parts: list[str], data: Any) -> None:
    joined = "".join(parts)
    cuts = data.draw(st.lists(st.integers(0, len(joined)), max_size=len(parts) + 1))
    other = resplit(joined, cuts)
    for a, b in ((parts, other), (tuple(parts), tuple(other))):
        if a != b:
            assert fingerprint(a) != fingerprint(b)
    as_bytes = [p.encode() for p in parts]
    other_bytes = [p.encode() for p in other]
    if as_bytes != other_bytes:
        assert fingerprint(as_bytes) != fingerprint(other_bytes)
    if parts != other:  # the same items nested differently
        assert fingerprint({"k": parts}) != fingerprint({"k": other})
        assert fingerprint([parts]) != fingerprint([other])


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        st.lists(st.text(alphabet=_TRICKY + "\0", max_size=3), min_size=10, max_size=40),
        values,
    )
)
def test_fingerprint_text_agrees_with_fingerprint_and_gives_the_joined_strs(value: Any) -> None:
    # The disk cache stores a list of strs as the text its fingerprint carried: the two
    # must never drift apart, and the text must split back into the list.
    from hypernodes.cache.fingerprint import fingerprint_text

    version, text = fingerprint_text(value)
    assert version == fingerprint(value)
    is_text = (
        type(value) is list
        and len(value) >= 16
        and all(type(x) is str and "\0" not in x for x in value)
    )
    assert (text is not None) == is_text
    if text is not None:
        assert text.decode("utf-8", "surrogatepass").split("\0") == value


def test_an_arrays_bytes_are_the_same_through_a_buffer_cast_or_a_uint8_view() -> None:
    # The numpy handler hashes a cast of the array's buffer when numpy exports one, else a
    # flat uint8 view: fingerprints must not depend on which.
    np = pytest.importorskip("numpy")
    from hypernodes.cache._libraries import _raw

    arrays = [
        np.linspace(0, 1, 64, dtype=np.float32),
        np.arange(6, dtype=">i8").reshape(2, 3),
        np.array(3.5),
        np.zeros((0, 3)),
        np.array([True, False]),
        np.array([1 + 2j, -0.0]),
        np.ones(3, np.float16),
        np.array(["2026-12-05"], dtype="datetime64[D]"),
        np.array([(1, 2.0)], dtype=[("a", "i4"), ("b", "f8")]),
        np.array(["ab", "c"]),
    ]
    for a in arrays:
        assert _raw(np, a).tobytes() == a.reshape(-1).view(np.uint8).tobytes(), a.dtype


# What these arrays fingerprinted to before a dtype's head was kept (xxh3-128): a cache
# written then must still hit, so the encoding must not move.
_ARRAYS_BEFORE = {
    "f4 64": ("9efc6acf2a6f5ad2d382a86eb843061a", lambda: np.arange(64, dtype=np.float32)),
    "f8 3x4": ("4cc299993416fe421a5134ab0795ab39", lambda: np.zeros((3, 4))),
    "i1 empty": ("9065ed493baaea93f62dcd9acb800cd1", lambda: np.array([], dtype="int8")),
    "strided": ("722004177e2586e2d1c260fa782a3d38", lambda: np.arange(6).reshape(2, 3)[:, ::2]),
    "U2": ("25fdc832b73840e29cd4c6c73739756e", lambda: np.array(["a", "bc"])),
    "0-d": ("cd3bc02f5f2d01c46c433995543f05e4", lambda: np.array(3.5)),
    "big-endian": ("02d1c699f4ec5a7b5525dc7dc1b8f6ca", lambda: np.arange(10, dtype=">i4")),
    "17 dims": ("bcaec1e0ff925633e717b0754640fa1c", lambda: np.zeros((1,) * 17)),
    "structured": (
        "56f34c57c6f242ff383f088d9f20777d",
        lambda: np.zeros(2, dtype=[("a", "f4"), ("b", "i2")]),
    ),
    "datetime": (
        "a28ea71943405ff3d95e58e33d38b06c",
        lambda: np.array(["2020-01-01"], dtype="datetime64[ns]"),
    ),
}


@pytest.mark.parametrize("name", list(_ARRAYS_BEFORE))
def test_an_array_fingerprints_as_it_did_the_first_time_and_every_time_after(name: str) -> None:
    from hypernodes.cache._hashing import ALGORITHM

    if ALGORITHM != "xxh3-128":
        pytest.skip("the values were taken with xxh3-128")
    expected, make = _ARRAYS_BEFORE[name]
    assert [fingerprint(make()) for _ in range(3)] == [expected] * 3
