"""The ``hypernodes`` command (click): ``run``, ``inspect``, ``viz``, their options and help.

Only this module and :mod:`.reporting` import click, and only the console script and
``python -m hypernodes`` import them. Results go to stdout, everything else (progress, logs, notes, errors,
whatever nodes print) to stderr. Exit codes: 0 ok, 1 the pipeline failed, 2 a usage or
configuration error.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import sys
from collections.abc import Iterator, Sequence
from time import perf_counter
from typing import Any

import click

from .. import __version__
from ..config import ENGINE_KEYS, effective_engine, merge_engine_config
from ..config_files import load_config
from ..errors import ConfigError, InvalidExecutorError, InvalidInputError
from ..executors.pools import ALIASES
from ..models import validate_inputs
from .cache import cache_group
from .encode import dumps
from .reporting import (
    EXIT_CODES_HELP,
    PROG,
    ReportingGroup,
    reporting,
    say,
    traceback_option,
)
from .settings import choose_cache, choose_engine, parse_mapping, stdout_to_stderr, with_progress
from .target import load_target, restored_sys_path

__all__ = ["cli"]


@click.group(
    name=PROG,
    cls=ReportingGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=EXIT_CODES_HELP,
)
@click.version_option(__version__, "--version", prog_name=PROG)
def cli() -> None:
    """Run, inspect and draw HyperNodes pipelines.

    TARGET names a Pipeline (or a function with no arguments that returns one) as
    path/to/file.py:attr or package.module:attr; without :attr, the module's only
    Pipeline is used.

    \b
    Examples:
      hypernodes run pipelines.py:pipeline --inputs '{"x": 1}'
      hypernodes inspect mypkg.flows:etl
      hypernodes viz pipelines.py:pipeline -o graph.svg
    """


def _names(values: Sequence[str]) -> list[str]:
    """Repeated and comma-separated names, in order."""
    return [n.strip() for value in values for n in value.split(",") if n.strip()]


_RUN_EXAMPLES = (
    """\b
Examples:
  hypernodes run pipelines.py:pipeline --inputs '{"x": 1, "y": 2}'
  hypernodes run pipelines.py:pipeline --inputs @inputs.yaml --output-name total
  hypernodes run mypkg.flows:make_pipeline --inputs '{"x": [1, 2, 3]}' \\
      --map-over x --map-executor threaded --max-workers 4
  hypernodes run pipelines.py:pipeline --inputs '{"a": [1, 2], "b": [10, 20]}' \\
      --map-over a --map-over b --map-mode product
  hypernodes run pipelines.py:pipeline --engine-cfg '{"node_executor": "async"}'
  hypernodes run pipelines.py:pipeline --config ci.yaml --cache-dir .cache

\b
Engine settings, lowest precedence first: library defaults < config file
(hypernodes.yaml, hypernodes.yml or [tool.hypernodes] in pyproject.toml) < the
pipeline's own engine < --engine-cfg < the flags. A flag or key you give wins even when
it equals the default; a flag you leave out changes nothing; "null" in --engine-cfg
resets that key to its default. The config file's cache_dir applies only to pipelines
without a cache of their own; --cache-dir always applies.

\b
Output: one JSON document on stdout (an object for a run, a list of objects for a map).
Values JSON cannot hold are converted: NaN/Infinity -> null, bytes ->
{"__bytes__": base64}, other objects -> {"__type__": ..., "__repr__": ...}.
Whatever the pipeline prints goes to stderr.

"""
    + EXIT_CODES_HELP
)


@cli.command("run", epilog=_RUN_EXAMPLES)
@click.argument("target")
@click.option(
    "-i",
    "--inputs",
    "inputs_arg",
    metavar="JSON|@FILE",
    help="Input values: a JSON object, or @file.json, @file.yaml, @- (JSON on stdin); "
    "checked against (and coerced to) the nodes' annotations.",
)
@click.option(
    "--output-name",
    "output_names",
    multiple=True,
    metavar="NAME",
    help="Compute only this output (repeatable or comma-separated); default: all outputs.",
)
@click.option(
    "--map-over",
    multiple=True,
    metavar="NAME",
    help="Run once per item of this list input (repeatable); prints a list of results.",
)
@click.option(
    "--map-mode",
    type=click.Choice(["zip", "product"]),
    help="With several --map-over inputs: pair them (zip, the default) or combine (product).",
)
@click.option(
    "--engine-cfg",
    "engine_cfg_arg",
    metavar="JSON|@FILE",
    help=f"Engine settings as a JSON object with the keys {', '.join(ENGINE_KEYS)}.",
)
@click.option(
    "--node-executor",
    metavar="ALIAS",
    help=f"How independent nodes proceed: {', '.join(ALIASES)}.",
)
@click.option("--map-executor", metavar="ALIAS", help="How map items proceed (same aliases).")
@click.option(
    "--max-workers", type=click.IntRange(min=1), metavar="N", help="Thread / process pool size."
)
@click.option(
    "--max-concurrent",
    type=click.IntRange(min=1),
    metavar="N",
    help="Nodes or items in flight at once (async: default 10).",
)
@click.option("--address", metavar="ADDRESS", help="Dask scheduler or Ray cluster address.")
@click.option(
    "--config",
    "config_path",
    metavar="FILE",
    help="Read settings from FILE instead of ./hypernodes.yaml or ./pyproject.toml.",
)
@click.option("--cache-dir", metavar="DIR", help="Cache node results on disk in DIR.")
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Progress bars on stderr (default: on when stderr is a terminal).",
)
@click.option(
    "-v", "--verbose", is_flag=True, help="Print the resolved settings and timing on stderr."
)
@click.option(
    "--explain",
    is_flag=True,
    help="Run nothing: print, per node, whether the cache has it and why not (a table).",
)
@click.option("--json", "as_json", is_flag=True, help="With --explain: one JSON object per node.")
@traceback_option
def run_command(
    target: str,
    inputs_arg: str | None,
    output_names: Sequence[str],
    map_over: Sequence[str],
    map_mode: str | None,
    engine_cfg_arg: str | None,
    node_executor: str | None,
    map_executor: str | None,
    max_workers: int | None,
    max_concurrent: int | None,
    address: str | None,
    config_path: str | None,
    cache_dir: str | None,
    progress: bool | None,
    verbose: bool,
    explain: bool,
    as_json: bool,
    show_traceback: bool,
) -> None:
    """Run the pipeline TARGET and print its outputs as JSON."""
    with reporting(show_traceback):
        mapped = _names(map_over)
        if map_mode is not None and not mapped:
            raise click.UsageError("--map-mode needs --map-over")
        if as_json and not explain:
            raise click.UsageError("--json goes with --explain (run prints JSON already)")
        if explain and mapped:
            raise click.UsageError(
                "--explain explains one run: pass one item's inputs instead of --map-over"
            )
        inputs: dict[str, Any] = {}
        if inputs_arg is not None:
            inputs = parse_mapping(inputs_arg, option="--inputs", error=InvalidInputError)
        engine_cfg = None
        if engine_cfg_arg is not None:
            engine_cfg = _checked(parse_mapping(engine_cfg_arg, option="--engine-cfg"))
        passed = {
            "node_executor": node_executor,
            "map_executor": map_executor,
            "max_workers": max_workers,
            "max_concurrent": max_concurrent,
            "address": address,
        }
        flags = merge_engine_config({k: v for k, v in passed.items() if v is not None})
        settings = load_config(config_path)
        outputs = _names(output_names) or None
        with restored_sys_path(), stdout_to_stderr(), contextlib.ExitStack() as stack:
            pipeline = copy.copy(load_target(target))
            inputs = validate_inputs(pipeline, inputs, map_over=mapped)
            choice = choose_engine(pipeline, settings.engine, engine_cfg, flags)
            if choice.note is not None:
                say(f"note: {choice.note}")
            if choice.engine is not None:
                pipeline.with_engine(choice.engine)
                stack.callback(choice.engine.close)
            store = choose_cache(pipeline, settings.cache_dir, cache_dir)
            if store is not None:
                pipeline.with_cache(store)
            bars = _progress(pipeline, progress)
            if verbose:
                _report_settings(settings.path, pipeline, bars)
                stack.enter_context(_info_logs())
            if explain:
                report = pipeline.explain(inputs, outputs)
                document = dumps(report.rows) if as_json else str(report)
                click.echo(document)
                return
            started = perf_counter()
            result: Any
            if mapped:
                result = pipeline.map(inputs, mapped, map_mode or "zip", outputs)  # type: ignore[arg-type]
            else:
                result = pipeline.run(inputs, outputs)
            if verbose:
                say(f"finished in {perf_counter() - started:.3f} s")
        document = dumps(result)
    click.echo(document)


def _checked(layer: dict[str, Any]) -> dict[str, Any]:
    """Validate ``--engine-cfg`` on its own, so errors say where the bad key came from."""
    try:
        merge_engine_config(layer)
    except InvalidExecutorError as exc:
        raise InvalidExecutorError(f"--engine-cfg: {exc}") from None
    except ConfigError as exc:
        raise ConfigError(f"--engine-cfg: {exc}") from None
    return layer


def _progress(pipeline: Any, wanted: bool | None) -> bool:
    try:
        return with_progress(pipeline, wanted)
    except ImportError as exc:
        if wanted:
            raise
        say(f"note: no progress bars: {exc}")
        return False


def _report_settings(path: Any, pipeline: Any, bars: bool) -> None:
    say(f"config file: {path if path is not None else 'none'}")
    say(f"engine: {effective_engine(pipeline)!r}")
    say(f"cache: {pipeline.cache!r}")
    say(f"progress bars: {'on' if bars else 'off'}")


@contextlib.contextmanager
def _info_logs() -> Iterator[None]:
    """Show the library's INFO logs on stderr meanwhile."""
    logger = logging.getLogger("hypernodes")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"{PROG}: %(levelname)s %(name)s: %(message)s"))
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


_INSPECT_EXAMPLES = (
    """\b
Examples:
  hypernodes inspect pipelines.py:pipeline
  hypernodes inspect mypkg.flows:etl --json | jq '.inputs'

"""
    + EXIT_CODES_HELP
)


@cli.command("inspect", epilog=_INSPECT_EXAMPLES)
@click.argument("target")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print a JSON document instead of text, with the JSON Schema of the inputs and "
    "outputs (input_schema, output_schema).",
)
@traceback_option
def inspect_command(target: str, as_json: bool, show_traceback: bool) -> None:
    """Show the inputs (with types and defaults), outputs, nodes and nested pipelines."""
    from .describe import describe, render, schemas  # deferred: only `inspect` needs it

    with reporting(show_traceback):
        with restored_sys_path(), stdout_to_stderr():
            pipeline = load_target(target)
            info = describe(pipeline)
            if as_json:
                info.update(schemas(pipeline))
        text = dumps(info) if as_json else render(info)
    click.echo(text)


_VIZ_EXAMPLES = (
    """\b
Examples:
  hypernodes viz pipelines.py:pipeline -o graph.svg
  hypernodes viz pipelines.py:pipeline -o graph.html --orient LR --depth all
  hypernodes viz pipelines.py:pipeline -o graph.png --renderer graphviz --show-types

The format follows the file extension: .svg, .html and .dot always work; .png, .pdf and
the other Graphviz formats need Graphviz's dot program.

"""
    + EXIT_CODES_HELP
)


@cli.command("viz", epilog=_VIZ_EXAMPLES)
@click.argument("target")
@click.option("-o", "--output", required=True, metavar="FILE", help="Where to write the picture.")
@click.option(
    "--depth",
    metavar="N|all",
    help="Levels of nested pipelines to open (default 1: nested pipelines are single boxes).",
)
@click.option("--orient", type=click.Choice(["TB", "LR", "BT", "RL"]), help="Layout direction.")
@click.option("--show-types/--no-show-types", default=None, help="Show type annotations.")
@click.option(
    "--renderer",
    type=click.Choice(["auto", "builtin", "graphviz"]),
    help="Drawing engine (default auto: Graphviz when installed, else the built-in one).",
)
@traceback_option
def viz_command(
    target: str,
    output: str,
    depth: str | None,
    orient: str | None,
    show_types: bool | None,
    renderer: str | None,
    show_traceback: bool,
) -> None:
    """Draw the graph of the pipeline TARGET into a file."""
    with reporting(show_traceback):
        options: dict[str, Any] = {
            k: v
            for k, v in (("orient", orient), ("show_types", show_types), ("renderer", renderer))
            if v is not None
        }
        if depth is not None:
            options["depth"] = _depth(depth)
        with restored_sys_path(), stdout_to_stderr():
            picture = load_target(target).visualize(**options)
            try:
                picture.save(output)
            except ValueError as exc:  # e.g. a file name without a suffix
                raise click.UsageError(str(exc)) from None
            except OSError as exc:  # a missing directory, no permission, a full disk
                reason = str(exc) if exc.strerror is None else f"cannot write it: {exc.strerror}"
                raise click.BadParameter(reason, param_hint="'-o' / '--output'") from None
    say(f"wrote {output}")


def _depth(text: str) -> int | None:
    if text == "all":
        return None
    if not text.isdigit() or int(text) < 1:
        raise click.BadParameter(
            f"{text!r} is not a positive integer or 'all'",
            ctx=click.get_current_context(),
            param_hint="'--depth'",
        )
    return int(text)


cli.add_command(cache_group)
