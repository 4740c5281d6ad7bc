"""The ``hypernodes`` command line: every option, every bad input, the precedence table.

Most tests run the click command in-process (``CliRunner``, stdout and stderr apart); the
ones at the end run real subprocesses for exit codes, stream separation and tracebacks.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from click.testing import CliRunner, Result

from hypernodes import HyperNodesEngine, MemoryCache, PipelineCallback
from hypernodes.cli.app import cli

ROOT = Path(__file__).resolve().parent.parent

FLOWS = '''
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from hypernodes import HyperNodesEngine, Pipeline, PipelineCallback, node


@node(output_name="total")
def add(x: int, y: int = 2) -> int:
    print("noise from add")
    return x + y


@node(output_name="doubled")
def double(total: int) -> int:
    return total * 2


pipeline = Pipeline([add, double], name="math")


@node(output_name="out")
def boom(x: int) -> int:
    raise ValueError(f"bad x={x}")


failing = Pipeline([boom], name="failing")


@node(output_name="pair")
def pair(a: int, b: int) -> list[int]:
    return [a, b]


pairs = Pipeline([pair], name="pairs")


def make_pipeline() -> Pipeline:
    return Pipeline([add, double], name="made")


def make_probe() -> Pipeline:
    """Two async nodes that can only see each other when they run concurrently."""
    events: dict[str, asyncio.Event] = {}

    def event(name: str) -> asyncio.Event:
        return events.setdefault(name, asyncio.Event())

    @node(output_name="a_saw_b")
    async def first(x: int) -> bool:
        event("a").set()
        try:
            await asyncio.wait_for(event("b").wait(), 0.5)
        except TimeoutError:
            return False
        return True

    @node(output_name="b_saw_a")
    async def second(x: int) -> bool:
        event("b").set()
        await asyncio.wait_for(event("a").wait(), 0.5)
        return True

    return Pipeline([first, second], name="probe")


own_engine = Pipeline(
    [add, double],
    name="own",
    engine=HyperNodesEngine(node_executor="async", max_concurrent=3),
)


class Recorder(PipelineCallback):
    def on_node_end(self, *, context, node, outputs, duration):
        print("recorded", node.name)


with_callback = Pipeline([add, double], name="cb", callbacks=[Recorder()])


def needs_args(a, b):
    return Pipeline([add])


def returns_int():
    return 42


def explodes():
    raise RuntimeError("factory broke")


not_a_pipeline = 42


class Holder:
    inner = Pipeline([add], name="held")


@dataclass
class Point:
    x: int
    y: int


class Opaque:
    def __repr__(self) -> str:
        return "<Opaque thing>"


@node(output_name="weird")
def weird(x: int) -> dict:
    return {
        "set": {3, 1, 2},
        "tuple": (1, 2),
        "nan": float("nan"),
        "inf": float("-inf"),
        "bytes": b"hi",
        "point": Point(1, 2),
        "path": Path("/tmp/a"),
        "opaque": Opaque(),
        7: "int key",
    }


odd = Pipeline([weird], name="odd")
'''


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A working directory holding ``flows.py``; modules imported from it are forgotten."""
    (tmp_path / "flows.py").write_text(FLOWS, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        file = getattr(sys.modules[name], "__file__", None) or ""
        if file.startswith(str(tmp_path)):
            del sys.modules[name]


def invoke(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)


def ok(*args: str, input: str | None = None) -> Any:
    """Run, expect exit 0, return the parsed stdout (strict JSON: no NaN tokens)."""
    result = invoke(*args, input=input)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout, parse_constant=_reject)


def _reject(token: str) -> Any:
    raise AssertionError(f"stdout is not strict JSON: {token}")


def fails(code: int, *args: str, input: str | None = None) -> str:
    """Run, expect ``code``, one error line on stderr, nothing on stdout; return that line."""
    result = invoke(*args, input=input)
    assert result.exit_code == code, (result.stdout, result.stderr)
    assert result.stdout == ""
    errors = [line for line in result.stderr.splitlines() if line.startswith("hypernodes: error:")]
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return errors[0]


def engine_line(result: Result) -> str:
    assert result.exit_code == 0, result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("hypernodes: engine: ")]
    assert len(lines) == 1, result.stderr
    return lines[0].removeprefix("hypernodes: engine: ")


def expected(**settings: Any) -> str:
    return repr(HyperNodesEngine(**settings))


# -- run: inputs ----------------------------------------------------------------------


def test_run_prints_one_json_object(project: Path) -> None:
    assert ok("run", "flows.py:pipeline", "--inputs", '{"x": 1}') == {"total": 3, "doubled": 6}


def test_inputs_override_defaults(project: Path) -> None:
    assert ok("run", "flows.py:pipeline", "-i", '{"x": 1, "y": 10}')["total"] == 11


def test_inputs_from_json_and_yaml_files(project: Path) -> None:
    (project / "in.json").write_text('{"x": 5}')
    (project / "in.yaml").write_text("x: 6\ny: 1\n")
    (project / "in.yml").write_text("x: 7\n")
    assert ok("run", "flows.py:pipeline", "--inputs", "@in.json")["total"] == 7
    assert ok("run", "flows.py:pipeline", "--inputs", "@in.yaml")["total"] == 7
    assert ok("run", "flows.py:pipeline", "--inputs", "@in.yml")["total"] == 9


def test_inputs_from_stdin(project: Path) -> None:
    assert ok("run", "flows.py:pipeline", "--inputs", "@-", input='{"x": 2}')["total"] == 4


def test_what_nodes_print_goes_to_stderr(project: Path) -> None:
    result = invoke("run", "flows.py:pipeline", "--inputs", '{"x": 1}')
    assert "noise from add" in result.stderr
    assert "noise" not in result.stdout


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ('{"x": 1', r"--inputs is not valid JSON: Expecting .* at column 8"),
        ("{'x': 1}", r"at column 2; JSON needs double quotes"),
        ("in.json", r"to read a file, write @in\.json"),
        ("[1, 2]", r"--inputs must be a JSON object .* got list"),
        ("@nope.json", r"--inputs: file 'nope\.json' not found"),
    ],
)
def test_bad_inputs(project: Path, value: str, match: str) -> None:
    import re

    assert re.search(match, fails(2, "run", "flows.py:pipeline", "--inputs", value))


def test_bad_inputs_yaml_file_gives_line_and_column(project: Path) -> None:
    (project / "in.yaml").write_text("x: 1\ny: [2\n")
    line = fails(2, "run", "flows.py:pipeline", "--inputs", "@in.yaml")
    assert "--inputs in.yaml: invalid YAML at line 3, column 1" in line


def test_bad_inputs_json_file_gives_line_and_column(project: Path) -> None:
    (project / "in.json").write_text('{\n  "x": 1,\n}\n')
    line = fails(2, "run", "flows.py:pipeline", "--inputs", "@in.json")
    assert "--inputs in.json is not valid JSON" in line
    # Where json reports the error depends on the Python version (3.13 points at the
    # trailing comma, 3.11 at the next line); that there is a line and a column does not.
    assert re.search(r"at line [23], column \d+", line), line


def test_missing_inputs_name_them_and_their_nodes(project: Path) -> None:
    line = fails(2, "run", "flows.py:pipeline")
    assert "missing inputs: 'x' (needed by 'add')" in line
    assert """--inputs '{"x": "..."}'""" in line


def test_unknown_input_is_a_usage_error(project: Path) -> None:
    line = fails(2, "run", "flows.py:pipeline", "--inputs", '{"x": 1, "z": 2}')
    assert "'z'" in line


# -- run: outputs and maps ------------------------------------------------------------


def test_output_name_selects_outputs(project: Path) -> None:
    assert ok("run", "flows.py:pipeline", "-i", '{"x": 1}', "--output-name", "total") == {
        "total": 3
    }


def test_output_name_repeatable_and_comma_separated(project: Path) -> None:
    both = {"total": 3, "doubled": 6}
    base = ("run", "flows.py:pipeline", "-i", '{"x": 1}')
    assert ok(*base, "--output-name", "total", "--output-name", "doubled") == both
    assert ok(*base, "--output-name", "total,doubled") == both


def test_unknown_output_name(project: Path) -> None:
    line = fails(2, "run", "flows.py:pipeline", "-i", '{"x": 1}', "--output-name", "totl")
    assert "no output 'totl'" in line and "did you mean 'total'" in line


def test_map_over_prints_a_list(project: Path) -> None:
    result = ok("run", "flows.py:pipeline", "-i", '{"x": [1, 2, 3]}', "--map-over", "x")
    assert result == [
        {"total": 3, "doubled": 6},
        {"total": 4, "doubled": 8},
        {"total": 5, "doubled": 10},
    ]


def test_map_zip_and_product(project: Path) -> None:
    base = ("run", "flows.py:pairs", "-i", '{"a": [1, 2], "b": [10, 20]}')
    zipped = ok(*base, "--map-over", "a", "--map-over", "b")
    assert [r["pair"] for r in zipped] == [[1, 10], [2, 20]]
    assert ok(*base, "--map-over", "a,b", "--map-mode", "zip") == zipped
    product = ok(*base, "--map-over", "a", "--map-over", "b", "--map-mode", "product")
    assert [r["pair"] for r in product] == [[1, 10], [1, 20], [2, 10], [2, 20]]


def test_map_with_output_name(project: Path) -> None:
    result = ok(
        "run",
        "flows.py:pipeline",
        "-i",
        '{"x": [1, 2]}',
        "--map-over",
        "x",
        "--output-name",
        "doubled",
    )
    assert result == [{"doubled": 6}, {"doubled": 8}]


def test_map_mode_without_map_over(project: Path) -> None:
    line = fails(2, "run", "flows.py:pipeline", "-i", '{"x": 1}', "--map-mode", "product")
    assert "--map-mode needs --map-over" in line
    assert line.endswith("(see 'hypernodes run --help')")


def test_bad_map_mode_is_one_line(project: Path) -> None:
    line = fails(2, "run", "flows.py:pipeline", "--map-mode", "cross")
    assert "'cross' is not one of 'zip', 'product'" in line


def test_map_over_unknown_input(project: Path) -> None:
    line = fails(2, "run", "flows.py:pipeline", "-i", '{"x": [1]}', "--map-over", "q")
    assert "'q'" in line


def test_map_over_unknown_input_lists_only_inputs(project: Path) -> None:
    line = fails(2, "run", "flows.py:pipeline", "-i", '{"x": [1]}', "--map-over", "xx")
    assert "map_over names 'xx', which is not an input of pipeline 'math'" in line
    assert "(did you mean 'x'?)" in line
    assert line.endswith("its inputs are 'x', 'y'")  # not the outputs 'total', 'doubled'


def test_map_zip_lengths_must_match(project: Path) -> None:
    line = fails(2, "run", "flows.py:pairs", "-i", '{"a": [1, 2], "b": [1]}', "--map-over", "a,b")
    assert "length" in line or "lengths" in line


# -- run: JSON output of values JSON cannot hold ---------------------------------------


def test_json_fallbacks(project: Path) -> None:
    weird = ok("run", "flows.py:odd", "-i", '{"x": 1}')["weird"]
    assert weird["set"] == [1, 2, 3]
    assert weird["tuple"] == [1, 2]
    assert weird["nan"] is None and weird["inf"] is None
    assert weird["bytes"] == {"__bytes__": "aGk="}
    assert weird["point"] == {"x": 1, "y": 2}
    assert weird["path"] == "/tmp/a"
    assert weird["opaque"] == {"__type__": "flows.Opaque", "__repr__": "<Opaque thing>"}
    assert weird["7"] == "int key"


# -- run: node failures ---------------------------------------------------------------


def test_failing_node_exits_1_with_its_name_and_error(project: Path) -> None:
    line = fails(1, "run", "flows.py:failing", "-i", '{"x": 3}')
    assert "node 'boom' failed" in line
    assert "ValueError: bad x=3" in line
    assert "--traceback" in line


def test_traceback_flag_shows_the_trace(project: Path) -> None:
    result = invoke("run", "flows.py:failing", "-i", '{"x": 3}', "--traceback")
    assert result.exit_code == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert 'raise ValueError(f"bad x={x}")' in result.stderr
    assert result.stderr.rstrip().splitlines()[-1].startswith("hypernodes: error: node 'boom'")


def test_failing_map_item_names_the_item(project: Path) -> None:
    line = fails(1, "run", "flows.py:failing", "-i", '{"x": [1, 2]}', "--map-over", "x")
    assert "node 'boom' failed" in line and "item 0" in line


# -- TARGET forms and errors ----------------------------------------------------------


def test_module_target(project: Path) -> None:
    assert ok("run", "flows:pipeline", "-i", '{"x": 1}')["total"] == 3


def test_factory_target_is_called(project: Path) -> None:
    assert ok("run", "flows.py:make_pipeline", "-i", '{"x": 1}')["doubled"] == 6


def test_dotted_attribute(project: Path) -> None:
    assert ok("run", "flows.py:Holder.inner", "-i", '{"x": 1}') == {"total": 3}


def test_target_without_attr_uses_the_only_pipeline(project: Path) -> None:
    (project / "single.py").write_text(
        "from hypernodes import Pipeline, node\n"
        "@node(output_name='y')\ndef f(x: int) -> int:\n    return x + 1\n"
        "flow = Pipeline([f])\n"
    )
    assert ok("run", "single.py", "-i", '{"x": 1}') == {"y": 2}


def test_target_without_attr_and_several_pipelines(project: Path) -> None:
    line = fails(2, "run", "flows.py", "-i", '{"x": 1}')
    assert "several pipelines; choose one" in line and "flows.py:pipeline" in line


def test_file_in_a_package_with_relative_and_sibling_imports(project: Path) -> None:
    pkg = project / "pkg_cli_rel"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "helpers.py").write_text("def inc(v: int) -> int:\n    return v + 1\n")
    (pkg / "flow.py").write_text(
        "from hypernodes import Pipeline, node\nfrom .helpers import inc\n"
        "@node(output_name='y')\ndef f(x: int) -> int:\n    return inc(x)\n"
        "flow = Pipeline([f])\n"
    )
    assert ok("run", "pkg_cli_rel/flow.py:flow", "-i", '{"x": 1}') == {"y": 2}
    assert ok("run", "pkg_cli_rel.flow:flow", "-i", '{"x": 2}') == {"y": 3}


def test_file_of_a_package_shadowed_by_another_copy(
    project: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    body = (
        "from hypernodes import Pipeline, node\n"
        "@node(output_name='y')\ndef f(x: int) -> int:\n    return x + {n}\n"
        "flow = Pipeline([f])\n"
    )
    for base, n in ((project, 1), (tmp_path_factory.mktemp("other"), 2)):
        pkg = base / "pkg_cli_twin"
        pkg.mkdir()
        (pkg / "__init__.py").write_text("")
        (pkg / "flow.py").write_text(body.format(n=n))
        other = base
    sys.path.insert(0, str(other))
    try:
        import pkg_cli_twin.flow  # noqa: F401  the other copy is imported first
    finally:
        sys.path.remove(str(other))
    try:
        line = fails(2, "run", "pkg_cli_twin/flow.py:flow", "-i", '{"x": 1}')
    finally:
        del sys.modules["pkg_cli_twin.flow"], sys.modules["pkg_cli_twin"]
    assert "is module 'pkg_cli_twin.flow' of a package, but importing" in line
    assert "use TARGET pkg_cli_twin.flow:flow" in line


def test_script_with_sibling_import(project: Path) -> None:
    sub = project / "scripts"
    sub.mkdir()
    (sub / "cli_sibling_helper.py").write_text("OFFSET = 100\n")
    (sub / "main_flow.py").write_text(
        "from hypernodes import Pipeline, node\nfrom cli_sibling_helper import OFFSET\n"
        "@node(output_name='y')\ndef f(x: int) -> int:\n    return x + OFFSET\n"
        "flow = Pipeline([f])\n"
    )
    assert ok("run", "scripts/main_flow.py:flow", "-i", '{"x": 1}') == {"y": 101}
    assert str(sub) not in sys.path  # restored after the command


def test_script_named_like_a_stdlib_module_does_not_shadow_it(project: Path) -> None:
    import json as stdlib_json

    (project / "json.py").write_text(
        "from hypernodes import Pipeline, node\n"
        "@node(output_name='y')\ndef f(x: int) -> int:\n    return -x\n"
        "flow = Pipeline([f])\n"
    )
    assert ok("run", "json.py:flow", "-i", '{"x": 1}') == {"y": -1}
    assert sys.modules["json"] is stdlib_json


@pytest.mark.parametrize(
    ("target", "match"),
    [
        ("missing.py:pipeline", "file 'missing.py' not found"),
        ("no_such_module_xyz:pipeline", "cannot find module 'no_such_module_xyz'"),
        ("flows.py:pipelin", "flows.py has no attribute 'pipelin' (did you mean 'pipeline'?)"),
        ("flows:pipelin", "module 'flows' has no attribute 'pipelin' (did you mean 'pipeline'?)"),
        ("flows.py:Holder.inne", "flows.py:Holder has no attribute 'inne' (did you mean 'inner'?)"),
        ("flows.py:not_a_pipeline", "flows.py:not_a_pipeline is int, not a Pipeline"),
        ("flows.py:add", "is a node, not a Pipeline; wrap it: Pipeline([add])"),
        ("flows.py:needs_args", "needs arguments (a, b)"),
        ("flows.py:returns_int", "returns_int() returned int, not a Pipeline"),
        ("flows.py:explodes", "calling flows.py:explodes() failed: RuntimeError: factory broke"),
        ("flows.py:", "ends with ':'"),
        ("flows.py:1abc", "is not an attribute name"),
    ],
)
def test_bad_targets(project: Path, target: str, match: str) -> None:
    assert match in fails(2, "run", target, "-i", '{"x": 1}')


def test_attr_missing_lists_pipelines(project: Path) -> None:
    line = fails(2, "run", "flows.py:pipelin")
    assert "flows.py:pipeline" in line and "flows.py:failing" in line


def test_attr_typo_in_a_file_named_like_a_stdlib_module_names_the_file(project: Path) -> None:
    # pipes.py shadows a stdlib module, so it is imported under another module name:
    # the message must name the file the user wrote, not that internal name.
    (project / "pipes.py").write_text(
        "from hypernodes import Pipeline, node\n"
        "@node(output_name='y')\ndef f(x: int) -> int:\n    return x + 1\n"
        "pipeline = Pipeline([f])\n"
    )
    line = fails(2, "run", "pipes.py:pipelin", "-i", '{"x": 1}')
    assert "pipes.py has no attribute 'pipelin' (did you mean 'pipeline'?)" in line
    assert "pipelines in it: pipes.py:pipeline" in line
    assert "_hypernodes_target" not in line


def test_import_error_inside_the_module_shows_the_line(project: Path) -> None:
    (project / "broken.py").write_text("import os\n\nimport not_installed_pkg_xyz\n")
    line = fails(2, "run", "broken.py:pipeline")
    assert (
        "cannot import broken.py: ModuleNotFoundError: No module named 'not_installed_pkg_xyz'"
        in line
    )
    assert "(broken.py, line 3)" in line


def test_import_error_in_a_module_target_shows_the_line(project: Path) -> None:
    (project / "broken_mod_cli.py").write_text("x = 1\nraise KeyError('boom')\n")
    line = fails(2, "run", "broken_mod_cli:pipeline")
    assert "KeyError: 'boom' (broken_mod_cli.py, line 2)" in line


def test_syntax_error_shows_the_line(project: Path) -> None:
    (project / "syntax.py").write_text("x = 1\ndef f(:\n")
    line = fails(2, "run", "syntax.py:pipeline")
    assert "SyntaxError" in line and "(syntax.py, line 2)" in line


# -- engine flags and validation ------------------------------------------------------


@pytest.mark.parametrize("flag", ["--node-executor", "--map-executor"])
def test_unknown_executor_lists_the_valid_ones(project: Path, flag: str) -> None:
    line = fails(2, "run", "flows.py:pipeline", "-i", '{"x": 1}', flag, "asynk")
    assert "'asynk'" in line and "did you mean 'async'" in line
    for alias in ("sequential", "async", "threaded", "parallel", "dask", "ray"):
        assert f"'{alias}'" in line


def test_unknown_executor_in_engine_cfg(project: Path) -> None:
    line = fails(2, "run", "flows.py:pipeline", "--engine-cfg", '{"map_executor": "gpu"}')
    assert line.startswith("hypernodes: error: --engine-cfg: unknown map_executor 'gpu'")


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (("--max-workers", "0"), "'--max-workers': 0 is not in the range x>=1"),
        (("--max-concurrent", "many"), "'many' is not a valid integer"),
        (("--engine-cfg", '{"max_workers": 0}'), "max_workers must be an integer >= 1"),
        (("--engine-cfg", '{"node_executor": "async"'), "--engine-cfg is not valid JSON"),
        (("--engine-cfg", "[1]"), "--engine-cfg must be a JSON object"),
        (("--bogus-flag",), "No such option '--bogus-flag'"),
    ],
)
def test_bad_engine_settings(project: Path, args: tuple[str, ...], match: str) -> None:
    assert match in fails(2, "run", "flows.py:pipeline", "-i", '{"x": 1}', *args)


def test_unknown_key_in_engine_cfg_names_it_and_the_valid_keys(project: Path) -> None:
    line = fails(2, "run", "flows.py:pipeline", "--engine-cfg", '{"max_worker": 2}')
    assert "--engine-cfg: unknown engine setting 'max_worker' (did you mean 'max_workers'?)" in line
    assert (
        "valid keys are node_executor, map_executor, max_workers, max_concurrent, address" in line
    )


def test_unknown_key_in_config_file(project: Path) -> None:
    (project / "hypernodes.yaml").write_text("engine:\n  workers: 2\n")
    line = fails(2, "run", "flows.py:pipeline", "-i", '{"x": 1}')
    assert "hypernodes.yaml: unknown engine setting 'workers'" in line
    assert "valid keys are node_executor" in line


def test_malformed_config_file(project: Path) -> None:
    (project / "hypernodes.yaml").write_text("engine: [\n")
    line = fails(2, "run", "flows.py:pipeline", "-i", '{"x": 1}')
    assert "hypernodes.yaml: invalid YAML at line 2" in line


def test_missing_config_file(project: Path) -> None:
    assert "config file 'ci.yaml' not found" in fails(
        2, "run", "flows.py:pipeline", "--config", "ci.yaml"
    )


def test_every_flag_reaches_the_engine(project: Path) -> None:
    result = invoke(
        "run", "flows.py:pipeline", "-i", '{"x": 1}', "-v",
        "--node-executor", "threaded", "--map-executor", "async",
        "--max-workers", "3", "--max-concurrent", "5", "--address", "tcp://h:8786",
    )  # fmt: skip
    assert engine_line(result) == expected(
        node_executor="threaded",
        map_executor="async",
        max_workers=3,
        max_concurrent=5,
        address="tcp://h:8786",
    )
    assert json.loads(result.stdout) == {"total": 3, "doubled": 6}


def test_verbose_shows_library_info_logs(project: Path) -> None:
    (project / "logs.py").write_text(
        "import logging\nfrom hypernodes import Pipeline, node\n"
        "@node(output_name='y')\ndef f(x: int) -> int:\n"
        "    logging.getLogger('hypernodes.probe').info('info from a node')\n    return x\n"
        "flow = Pipeline([f])\n"
    )
    quiet = invoke("run", "logs.py:flow", "-i", '{"x": 1}')
    loud = invoke("run", "logs.py:flow", "-i", '{"x": 1}', "-v")
    assert "info from a node" not in quiet.stderr
    assert "hypernodes: INFO hypernodes.probe: info from a node" in loud.stderr
    assert "hypernodes: finished in " in loud.stderr
    assert json.loads(loud.stdout) == {"y": 1}


def test_engine_cfg_from_a_file(project: Path) -> None:
    (project / "engine.json").write_text('{"node_executor": "async", "max_concurrent": 4}')
    result = invoke(
        "run", "flows.py:pipeline", "-i", '{"x": 1}', "-v", "--engine-cfg", "@engine.json"
    )
    assert engine_line(result) == expected(node_executor="async", max_concurrent=4)


# -- the precedence table -------------------------------------------------------------

PRECEDENCE = [
    # (config file engine mapping, command line, expected engine settings)
    pytest.param(None, [], {}, id="library-default"),
    pytest.param({"node_executor": "async"}, [], {"node_executor": "async"}, id="file"),
    pytest.param(
        {"node_executor": "async"},
        ["--node-executor", "sequential"],
        {"node_executor": "sequential"},
        id="flag-equal-to-default-beats-file",
    ),
    pytest.param(
        {"node_executor": "async"},
        ["--engine-cfg", '{"node_executor": "sequential"}'],
        {"node_executor": "sequential"},
        id="cfg-equal-to-default-beats-file",
    ),
    pytest.param({"max_workers": 4}, [], {"max_workers": 4}, id="unset-flag-keeps-file"),
    pytest.param(
        {"max_workers": 4},
        ["--node-executor", "async"],
        {"max_workers": 4, "node_executor": "async"},
        id="other-flag-keeps-file",
    ),
    pytest.param(
        {"max_workers": 4},
        ["--engine-cfg", '{"node_executor": "async"}'],
        {"max_workers": 4, "node_executor": "async"},
        id="cfg-without-key-keeps-file",
    ),
    pytest.param(
        {"max_workers": 4},
        ["--engine-cfg", '{"max_workers": null}'],
        {},
        id="explicit-null-clobbers-file",
    ),
    pytest.param(
        {"max_workers": 4},
        ["--engine-cfg", '{"max_workers": 2}'],
        {"max_workers": 2},
        id="cfg-beats-file",
    ),
    pytest.param(
        {"max_workers": 4},
        ["--engine-cfg", '{"max_workers": 2}', "--max-workers", "3"],
        {"max_workers": 3},
        id="flag-beats-cfg-beats-file",
    ),
    pytest.param(
        None,
        ["--engine-cfg", '{"node_executor": "async"}', "--node-executor", "sequential"],
        {"node_executor": "sequential"},
        id="flag-equal-to-default-beats-cfg",
    ),
    pytest.param(
        None,
        ["--engine-cfg", '{"max_workers": null}', "--max-workers", "3"],
        {"max_workers": 3},
        id="flag-beats-cfg-null",
    ),
    pytest.param(
        {"max_workers": 4},
        ["--max-workers", "4"],
        {"max_workers": 4},
        id="flag-equal-to-file",
    ),
]


@pytest.mark.parametrize(("file_engine", "argv", "settings"), PRECEDENCE)
def test_precedence(
    project: Path, file_engine: dict[str, Any] | None, argv: list[str], settings: dict[str, Any]
) -> None:
    if file_engine is not None:
        (project / "hypernodes.yaml").write_text(json.dumps({"engine": file_engine}))
    result = invoke("run", "flows.py:pipeline", "-i", '{"x": 1}', "-v", *argv)
    assert engine_line(result) == expected(**settings)


@pytest.mark.parametrize("source", ["yaml", "yml", "pyproject", "--config"])
def test_precedence_from_every_file_kind(project: Path, source: str) -> None:
    if source == "pyproject":
        (project / "pyproject.toml").write_text("[tool.hypernodes.engine]\nmax_workers = 4\n")
    elif source == "--config":
        (project / "hypernodes.yaml").write_text("engine:\n  max_workers: 9\n")
        (project / "ci.yml").write_text("engine:\n  max_workers: 4\n")
    else:
        (project / f"hypernodes.{source}").write_text("engine:\n  max_workers: 4\n")
    extra = ["--config", "ci.yml"] if source == "--config" else []
    base = ["run", "flows.py:pipeline", "-i", '{"x": 1}', "-v", *extra]
    assert engine_line(invoke(*base)) == expected(max_workers=4)
    assert engine_line(invoke(*base, "--max-workers", "2")) == expected(max_workers=2)
    nulled = invoke(*base, "--engine-cfg", '{"max_workers": null}')
    assert engine_line(nulled) == expected()


def test_flag_equal_to_default_really_runs_sequentially(project: Path) -> None:
    (project / "hypernodes.yaml").write_text("engine:\n  node_executor: async\n")
    concurrent = ok("run", "flows.py:make_probe", "-i", '{"x": 1}')
    assert concurrent == {"a_saw_b": True, "b_saw_a": True}
    sequential = ok("run", "flows.py:make_probe", "-i", '{"x": 1}', "--node-executor", "sequential")
    assert sequential == {"a_saw_b": False, "b_saw_a": True}


def test_cli_uses_from_config_with_the_layers_in_order(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (project / "hypernodes.yaml").write_text("engine:\n  max_workers: 4\n")
    seen: list[tuple[Any, ...]] = []
    original = HyperNodesEngine.from_config.__func__  # type: ignore[attr-defined]

    def spy(cls: type[HyperNodesEngine], *layers: Any) -> HyperNodesEngine:
        seen.append(layers)
        return original(cls, *layers)  # type: ignore[no-any-return]

    monkeypatch.setattr(HyperNodesEngine, "from_config", classmethod(spy))
    ok(
        "run", "flows.py:pipeline", "-i", '{"x": 1}',
        "--engine-cfg", '{"max_workers": null, "node_executor": "async"}',
        "--node-executor", "sequential",
    )  # fmt: skip
    assert seen == [
        (
            {"max_workers": 4},
            {"max_workers": None, "node_executor": "async"},
            {"node_executor": "sequential"},
        )
    ]


def test_pipeline_engine_is_kept_without_command_line_settings(project: Path) -> None:
    (project / "hypernodes.yaml").write_text("engine:\n  node_executor: threaded\n")
    result = invoke("run", "flows.py:own_engine", "-i", '{"x": 1}', "-v")
    assert engine_line(result) == expected(node_executor="async", max_concurrent=3)


def test_command_line_settings_layer_over_the_pipeline_engine(project: Path) -> None:
    (project / "hypernodes.yaml").write_text("engine:\n  map_executor: threaded\n")
    result = invoke("run", "flows.py:own_engine", "-i", '{"x": 1}', "-v", "--max-workers", "2")
    assert engine_line(result) == expected(node_executor="async", max_concurrent=3, max_workers=2)
    nulled = invoke(
        "run",
        "flows.py:own_engine",
        "-i",
        '{"x": 1}',
        "-v",
        "--engine-cfg",
        '{"max_concurrent": null}',
    )
    assert engine_line(nulled) == expected(node_executor="async")


def test_the_loaded_pipeline_object_is_not_modified(project: Path) -> None:
    ok("run", "flows:own_engine", "-i", '{"x": 1}', "--max-workers", "2", "--cache-dir", "c")
    flows = sys.modules["flows"]
    assert flows.own_engine.engine.max_workers is None
    assert flows.own_engine.cache is None


# -- cache ----------------------------------------------------------------------------


class FakeCache(MemoryCache):
    made: list[Path] = []

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = Path(path)
        FakeCache.made.append(self.path)

    def __repr__(self) -> str:
        return f"FakeCache({str(self.path)!r})"


@pytest.fixture
def fake_disk_cache(monkeypatch: pytest.MonkeyPatch) -> type[FakeCache]:
    """Check the wiring without depending on the store (DiskCache has its own suite)."""
    import hypernodes.cache

    FakeCache.made = []
    monkeypatch.setattr(hypernodes.cache, "DiskCache", FakeCache)
    return FakeCache


def cache_line(project: Path, *args: str) -> str:
    result = invoke("run", "flows.py:pipeline", "-i", '{"x": 1}', "-v", "--output-name", "x", *args)
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("hypernodes: cache: ")]
    assert result.exit_code == 0 and len(lines) == 1, result.stderr
    return lines[0].removeprefix("hypernodes: cache: ")


def test_cache_dir_flag_installs_a_disk_cache(
    project: Path, fake_disk_cache: type[FakeCache]
) -> None:
    assert cache_line(project, "--cache-dir", "here") == "FakeCache('here')"


def test_cache_dir_from_the_file_and_the_flag_wins(
    project: Path, fake_disk_cache: type[FakeCache]
) -> None:
    (project / "hypernodes.yaml").write_text("cache_dir: from-file\n")
    assert cache_line(project) == f"FakeCache({str(project / 'from-file')!r})"
    assert cache_line(project, "--cache-dir", "flag") == "FakeCache('flag')"


def test_no_cache_by_default(project: Path, fake_disk_cache: type[FakeCache]) -> None:
    assert cache_line(project) == "None"
    assert fake_disk_cache.made == []


def test_file_cache_dir_does_not_replace_the_pipelines_own_cache(
    project: Path, fake_disk_cache: type[FakeCache]
) -> None:
    from hypernodes import Pipeline
    from hypernodes.cli.settings import choose_cache

    own = Pipeline([], cache=FakeCache(project / "own"))
    assert choose_cache(own, project / "file", None) is None
    flagged = choose_cache(own, project / "file", "flag")
    assert isinstance(flagged, FakeCache) and flagged.path == Path("flag")
    assert isinstance(choose_cache(Pipeline([]), project / "file", None), FakeCache)


def _disk_cache_ready() -> bool:
    import inspect

    from hypernodes.cache import DiskCache

    return not inspect.isabstract(DiskCache)


@pytest.mark.skipif(not _disk_cache_ready(), reason="DiskCache is still a placeholder")
def test_cache_dir_really_caches_between_runs(project: Path) -> None:
    (project / "counted.py").write_text(
        "from pathlib import Path\nfrom hypernodes import Pipeline, node\n"
        "@node(output_name='y')\ndef f(x: int) -> int:\n"
        "    with open('calls.txt', 'a') as fh:\n        fh.write('.')\n"
        "    return x * 2\n"
        "flow = Pipeline([f])\n"
    )
    for _ in range(2):
        assert ok("run", "counted.py:flow", "-i", '{"x": 4}', "--cache-dir", "store") == {"y": 8}
    assert (project / "calls.txt").read_text() == "."
    assert (project / "store").is_dir()


# -- progress -------------------------------------------------------------------------


class FakeProgress(PipelineCallback):
    made = 0

    def __init__(self) -> None:
        FakeProgress.made += 1

    def on_node_end(self, **_: Any) -> None:
        sys.stderr.write("progress tick\n")


@pytest.fixture
def fake_progress(monkeypatch: pytest.MonkeyPatch) -> type[FakeProgress]:
    import hypernodes.progress

    FakeProgress.made = 0
    monkeypatch.setattr(hypernodes.progress, "ProgressCallback", FakeProgress)
    return FakeProgress


def test_progress_flag_adds_bars_and_keeps_the_pipelines_callbacks(
    project: Path, fake_progress: type[FakeProgress]
) -> None:
    result = invoke("run", "flows.py:with_callback", "-i", '{"x": 1}', "--progress", "-v")
    assert result.exit_code == 0, result.stderr
    assert fake_progress.made == 1
    assert result.stderr.count("progress tick") == 2
    assert result.stderr.count("recorded ") == 2  # the pipeline's own callback still runs
    assert "hypernodes: progress bars: on" in result.stderr
    assert json.loads(result.stdout) == {"total": 3, "doubled": 6}


def test_no_progress_and_the_non_terminal_default(
    project: Path, fake_progress: type[FakeProgress]
) -> None:
    for extra in (["--no-progress"], []):
        result = invoke("run", "flows.py:pipeline", "-i", '{"x": 1}', *extra)
        assert result.exit_code == 0
        assert "progress tick" not in result.stderr
    assert fake_progress.made == 0


def test_progress_defaults_on_for_a_terminal(
    project: Path, fake_progress: type[FakeProgress], monkeypatch: pytest.MonkeyPatch
) -> None:
    from hypernodes import Pipeline
    from hypernodes.cli.settings import with_progress

    class Terminal:
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stderr", Terminal())
    pipeline = Pipeline([])
    assert with_progress(pipeline, None) is True
    assert [type(cb) for cb in pipeline.callbacks] == [FakeProgress]
    assert with_progress(Pipeline([]), False) is False


# -- inspect --------------------------------------------------------------------------

NESTED = """
from hypernodes import Pipeline, node

@node(output_name="y")
def inner_f(x: int, scale: float = 2.0) -> float:
    return x * scale

inner = Pipeline([inner_f], name="inner")

@node(output_name="total")
async def total(ys: list[float]) -> float:
    return sum(ys)

outer = Pipeline(
    [inner.as_node(input_mapping={"xs": "x"}, output_mapping={"y": "ys"}, map_over="xs", name="per_item"), total],
    name="outer",
)
"""


def test_inspect_text(project: Path) -> None:
    result = invoke("inspect", "flows.py:pipeline")
    assert result.exit_code == 0, result.stderr
    text = result.stdout
    assert "Pipeline 'math'" in text
    assert "required inputs:\n    x: int" in text
    assert "optional inputs:\n    y: int = 2" in text
    assert "total: int  (from add)" in text
    assert "add(x, y) -> total  [sync]" in text


def test_inspect_json_with_nested_pipelines(project: Path) -> None:
    (project / "nested.py").write_text(NESTED)
    info = ok("inspect", "nested.py:outer", "--json")
    assert info["name"] == "outer"
    assert info["inputs"] == [{"name": "xs", "type": "list[int]"}]
    assert info["optional_inputs"] == [{"name": "scale", "type": "float", "default": 2.0}]
    assert {"name": "total", "type": "float", "node": "total"} in info["outputs"]
    assert {"name": "ys", "type": "list[float]", "node": "per_item"} in info["outputs"]
    nodes = {n["name"]: n for n in info["nodes"]}
    assert nodes["total"]["async"] is True and nodes["total"]["kind"] == "node"
    assert nodes["per_item"]["kind"] == "pipeline"
    (nested,) = info["pipelines"]
    assert nested["node"] == "per_item"
    assert nested["map_over"] == ["xs"] and nested["map_mode"] == "zip"
    assert nested["input_mapping"] == {"xs": "x"}
    assert nested["pipeline"]["inputs"] == [{"name": "x", "type": "int"}]
    text = invoke("inspect", "nested.py:outer").stdout
    assert "nested pipeline via node 'per_item', maps over xs (zip):" in text
    assert "    Pipeline 'inner'" in text


def test_inspect_shows_the_pipeline_engine(project: Path) -> None:
    info = ok("inspect", "flows.py:own_engine", "--json")
    assert info["engine"] == expected(node_executor="async", max_concurrent=3)


def test_inspect_bad_target(project: Path) -> None:
    assert "has no attribute 'nope'" in fails(2, "inspect", "flows.py:nope")


# -- viz ------------------------------------------------------------------------------


@pytest.fixture
def fake_viz(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Replace ``hypernodes.viz`` (drawing has its own suite): record the calls."""
    calls: list[dict[str, Any]] = []

    class Picture:
        def __init__(self, options: dict[str, Any]) -> None:
            self.options = options

        def save(self, path: str) -> None:
            self.options["saved"] = path
            Path(path).write_text("<svg/>")

    def visualize(pipeline: Any, filename: str | None = None, **options: Any) -> Picture:
        record = {"pipeline": pipeline.name, "filename": filename, **options}
        calls.append(record)
        return Picture(record)

    module = ModuleType("hypernodes.viz")
    module.visualize = visualize  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "hypernodes.viz", module)
    return calls


def test_viz_writes_the_file(project: Path, fake_viz: list[dict[str, Any]]) -> None:
    result = invoke("viz", "flows.py:pipeline", "-o", "graph.svg")
    assert result.exit_code == 0, result.stderr
    assert (project / "graph.svg").read_text() == "<svg/>"
    assert fake_viz == [{"pipeline": "math", "filename": None, "saved": "graph.svg"}]
    assert "wrote graph.svg" in result.stderr
    assert result.stdout == ""


def test_viz_passes_the_options(project: Path, fake_viz: list[dict[str, Any]]) -> None:
    args = ("viz", "flows.py:pipeline", "-o", "g.png", "--orient", "LR")
    assert invoke(*args, "--depth", "2", "--show-types", "--renderer", "builtin").exit_code == 0
    assert invoke(*args, "--depth", "all", "--no-show-types").exit_code == 0
    assert fake_viz[0] == {
        "pipeline": "math", "filename": None, "depth": 2, "orient": "LR",
        "show_types": True, "renderer": "builtin", "saved": "g.png",
    }  # fmt: skip
    assert fake_viz[1]["depth"] is None and fake_viz[1]["show_types"] is False
    assert "renderer" not in fake_viz[1]


def test_viz_bad_depth(project: Path) -> None:
    line = fails(2, "viz", "flows.py:pipeline", "-o", "g.svg", "--depth", "0")
    assert "Invalid value for '--depth': '0' is not a positive integer or 'all'" in line


def test_viz_draws_a_real_svg(project: Path) -> None:
    result = invoke("viz", "flows.py:pipeline", "-o", "graph.svg", "--renderer", "builtin")
    assert result.exit_code == 0, result.stderr
    svg = (project / "graph.svg").read_text()
    assert "<svg" in svg and "double" in svg


def test_viz_file_without_suffix_is_a_usage_error(project: Path) -> None:
    line = fails(2, "viz", "flows.py:pipeline", "-o", "graph", "--renderer", "builtin")
    assert "give it a suffix" in line


@pytest.mark.parametrize("renderer", ["builtin", "auto"])
def test_viz_into_a_missing_directory_is_a_usage_error(project: Path, renderer: str) -> None:
    target = project / "nonexistent" / "dir" / "g.svg"
    line = fails(2, "viz", "flows.py:pipeline", "-o", str(target), "--renderer", renderer)
    assert "Invalid value for '-o' / '--output'" in line
    assert f"directory {str(target.parent)!r} does not exist; create it first" in line
    assert "unexpected" not in line


def test_viz_into_a_file_used_as_a_directory_is_a_usage_error(project: Path) -> None:
    line = fails(2, "viz", "flows.py:pipeline", "-o", "flows.py/g.svg", "--renderer", "builtin")
    assert "'flows.py' is not a directory" in line


def test_viz_needs_an_output(project: Path) -> None:
    assert "Missing option '-o' / '--output'" in fails(2, "viz", "flows.py:pipeline")


def test_viz_missing_extra_is_one_line(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = ModuleType("hypernodes.viz")

    def visualize(*_: Any, **__: Any) -> Any:
        raise ImportError("drawing needs graphviz: pip install 'hypernodes[viz]'")

    module.visualize = visualize  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "hypernodes.viz", module)
    line = fails(2, "viz", "flows.py:pipeline", "-o", "g.svg")
    assert "pip install 'hypernodes[viz]'" in line


# -- help and version -----------------------------------------------------------------


@pytest.mark.parametrize("command", [[], ["run"], ["inspect"], ["viz"]])
def test_help_has_examples_and_exit_codes(command: list[str]) -> None:
    result = invoke(*command, "--help")
    assert result.exit_code == 0
    assert "Examples:" in result.stdout
    assert "Exit codes:" in result.stdout
    assert "1  the pipeline failed" in result.stdout


def test_run_help_documents_every_option() -> None:
    text = invoke("run", "--help").stdout
    for option in (
        "--inputs", "--output-name", "--map-over", "--map-mode", "--engine-cfg",
        "--node-executor", "--map-executor", "--max-workers", "--max-concurrent",
        "--address", "--config", "--cache-dir", "--progress / --no-progress", "--traceback",
    ):  # fmt: skip
        assert option in text
    assert "null" in text and "__repr__" in text


def test_version() -> None:
    import hypernodes

    result = invoke("--version")
    assert result.exit_code == 0
    assert hypernodes.__version__ in result.stdout


def test_unknown_command_is_one_line() -> None:
    line = fails(2, "runn")
    assert "No such command 'runn'" in line


# -- real subprocesses: console script, exit codes, streams, no traceback -------------


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def hn(cwd: Path, *args: str, script: bool = False) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("hypernodes")
    command = [str(exe)] if script else [sys.executable, "-m", "hypernodes"]
    return subprocess.run(
        [*command, *args], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=90
    )


@pytest.fixture
def flows_dir(tmp_path: Path) -> Path:
    (tmp_path / "flows.py").write_text(FLOWS, encoding="utf-8")
    return tmp_path


def test_console_script_exit_codes(flows_dir: Path) -> None:
    if not Path(sys.executable).with_name("hypernodes").exists():
        pytest.fail(
            "the hypernodes console script is not installed in this venv (pip install -e .)"
        )
    good = hn(flows_dir, "run", "flows.py:pipeline", "--inputs", '{"x": 1}', script=True)
    assert good.returncode == 0
    assert json.loads(good.stdout) == {"total": 3, "doubled": 6}
    assert "noise from add" in good.stderr and "noise" not in good.stdout
    failed = hn(flows_dir, "run", "flows.py:failing", "--inputs", '{"x": 1}', script=True)
    assert failed.returncode == 1
    assert failed.stdout == ""
    assert "Traceback" not in failed.stderr
    assert failed.stderr.count("\n") == 1 and "node 'boom' failed" in failed.stderr
    usage = hn(flows_dir, "run", "flows.py:pipeline", "--inputs", "{x}", script=True)
    assert usage.returncode == 2
    assert usage.stderr.startswith("hypernodes: error: --inputs is not valid JSON")
    assert usage.stderr.count("\n") == 1


def test_python_m_traceback_and_config_errors(flows_dir: Path) -> None:
    traced = hn(flows_dir, "run", "flows.py:failing", "--inputs", '{"x": 1}', "--traceback")
    assert traced.returncode == 1
    assert (
        "Traceback (most recent call last)" in traced.stderr
        and "ValueError: bad x=1" in traced.stderr
    )
    (flows_dir / "hypernodes.yaml").write_text("engine:\n  node_exec: async\n")
    bad = hn(flows_dir, "run", "flows.py:pipeline", "--inputs", '{"x": 1}')
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1 and "unknown engine setting 'node_exec'" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_python_m_map_and_inspect(flows_dir: Path) -> None:
    mapped = hn(flows_dir, "run", "flows.py:pipeline", "-i", '{"x": [1, 2]}', "--map-over", "x")
    assert mapped.returncode == 0
    assert json.loads(mapped.stdout) == [{"total": 3, "doubled": 6}, {"total": 4, "doubled": 8}]
    inspected = hn(flows_dir, "inspect", "flows.py:pipeline", "--json")
    assert inspected.returncode == 0 and json.loads(inspected.stdout)["name"] == "math"


def test_prints_from_worker_processes_stay_off_stdout(tmp_path: Path) -> None:
    (tmp_path / "procs.py").write_text(
        textwrap.dedent(
            """
            from hypernodes import Pipeline, node

            @node(output_name="y")
            def loud(x: int) -> int:
                print("printed in a worker process", flush=True)
                return x + 1

            flow = Pipeline([loud])
            """
        )
    )
    result = hn(
        tmp_path, "run", "procs.py:flow", "-i", '{"x": [1, 2]}', "--map-over", "x",
        "--map-executor", "parallel", "--max-workers", "1",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [{"y": 2}, {"y": 3}]
    assert "printed in a worker process" in result.stderr


def test_missing_click_names_the_extra() -> None:
    code = (
        "import sys; sys.modules['click'] = None\n"
        "from hypernodes.cli import main\nmain(['--help'])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "hypernodes: error: the command line needs click and PyYAML: pip install 'hypernodes[cli]'"
    )


def test_import_hypernodes_stays_light() -> None:
    code = (
        "import sys, hypernodes\n"
        "print(sorted(m for m in ('click', 'yaml', 'hypernodes.cli', 'hypernodes.config_files', "
        "'hypernodes.demo') if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=60
    )
    assert result.stdout.strip() == "[]"


# -- encoder and target parsing units -------------------------------------------------


def test_encoder_handles_third_party_and_odd_values() -> None:
    import datetime
    import decimal
    import enum
    import uuid

    import numpy as np
    import pandas as pd
    import pydantic

    from hypernodes.cli.encode import dumps, to_jsonable

    class Color(enum.Enum):
        RED = "red"

    class Model(pydantic.BaseModel):
        a: int
        when: datetime.date

    loop: list[Any] = [1]
    loop.append(loop)
    value = {
        "array": np.arange(3),
        "scalar": np.float32(1.5),
        "nan_array": np.array([np.nan, 1.0]),
        "frame": pd.DataFrame({"a": [1, 2]}),
        "series": pd.Series([3, 4]),
        "model": Model(a=1, when=datetime.date(2024, 1, 2)),
        "enum": Color.RED,
        "when": datetime.datetime(2024, 1, 2, 3, 4, 5),
        "delta": datetime.timedelta(seconds=90),
        "decimal": decimal.Decimal("1.10"),
        "uuid": uuid.UUID(int=1),
        "complex": 1 + 2j,
        "mixed_set": {1, "a"},
        "loop": loop,
        (1, 2): "tuple key",
    }
    out = to_jsonable(value)
    assert out["array"] == [0, 1, 2]
    assert out["scalar"] == 1.5
    assert out["nan_array"] == [None, 1.0]
    assert out["frame"] == [{"a": 1}, {"a": 2}]
    assert out["series"] == [3, 4]
    assert out["model"] == {"a": 1, "when": "2024-01-02"}
    assert out["enum"] == "red"
    assert out["when"] == "2024-01-02T03:04:05"
    assert out["delta"] == 90.0
    assert out["decimal"] == "1.10"
    assert out["uuid"] == "00000000-0000-0000-0000-000000000001"
    assert out["complex"] == "(1+2j)"
    assert sorted(map(str, out["mixed_set"])) == ["1", "a"]
    assert out["loop"][1] == {"__type__": "list", "__repr__": "<cycle>"}
    assert out["(1, 2)"] == "tuple key"
    json.loads(dumps(value), parse_constant=_reject)


def test_encoder_survives_a_failing_repr() -> None:
    from hypernodes.cli.encode import to_jsonable

    class Bad:
        def __repr__(self) -> str:
            raise RuntimeError("no")

    assert to_jsonable(Bad())["__repr__"] == "<repr failed: RuntimeError>"


@pytest.mark.parametrize(
    ("spec", "location", "attr", "is_file"),
    [
        ("flows.py:pipeline", "flows.py", "pipeline", True),
        ("a/b/flows.py:obj.attr", "a/b/flows.py", "obj.attr", True),
        ("pkg.mod:pipeline", "pkg.mod", "pipeline", False),
        ("pkg.mod", "pkg.mod", None, False),
        ("flows.py", "flows.py", None, True),
        ("C:\\work\\flows.py", "C:\\work\\flows.py", None, True),
        ("C:\\work\\flows.py:pipe", "C:\\work\\flows.py", "pipe", True),
    ],
)
def test_parse_target(spec: str, location: str, attr: str | None, is_file: bool) -> None:
    from hypernodes.cli.target import Target, parse_target

    assert parse_target(spec) == Target(spec, location, attr, is_file)


@pytest.mark.parametrize("spec", ["", ":pipeline", "not a module:x"])
def test_parse_target_errors(spec: str) -> None:
    from hypernodes.cli.target import TargetError, parse_target

    with pytest.raises(TargetError):
        parse_target(spec)


def test_choose_engine_directly() -> None:
    from hypernodes import Pipeline
    from hypernodes.cli.settings import choose_engine

    bare = Pipeline([])
    assert choose_engine(bare, None).engine is None
    assert choose_engine(bare, {}, None, {}).engine is None
    made = choose_engine(bare, {"max_workers": 4}, {"max_workers": None}, {})
    assert made.engine is not None and made.engine.max_workers is None
    own = Pipeline([], engine=HyperNodesEngine(node_executor="async"))
    assert choose_engine(own, {"node_executor": "threaded"}).engine is None
    layered = choose_engine(own, {"node_executor": "threaded"}, {"max_workers": 2})
    assert repr(layered.engine) == expected(node_executor="async", max_workers=2)
    assert layered.note is None


def test_choose_engine_replaces_an_engine_it_cannot_layer_on() -> None:
    import concurrent.futures

    from hypernodes import Pipeline
    from hypernodes.cli.settings import choose_engine

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        own = Pipeline([], engine=HyperNodesEngine(node_executor=pool))
        choice = choose_engine(own, {"max_workers": 4}, {"node_executor": "async"})
    assert repr(choice.engine) == expected(node_executor="async", max_workers=4)
    assert choice.note is not None and "replace it" in choice.note


def _unused(fn: Callable[..., Any]) -> None:  # keeps the Callable import honest for mypy
    del fn
