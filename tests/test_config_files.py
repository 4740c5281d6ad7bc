"""Configuration files: discovery, formats, validation with file names and positions."""

from __future__ import annotations

from pathlib import Path

import pytest

from hypernodes import ConfigError, HyperNodesEngine, InvalidExecutorError
from hypernodes.config_files import ConfigFile, find_config, load_config, read_config


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# -- discovery ------------------------------------------------------------------------


def test_no_file_gives_an_empty_config(tmp_path: Path) -> None:
    assert find_config(tmp_path) is None
    assert load_config(directory=tmp_path) == ConfigFile()


def test_discovery_uses_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "hypernodes.yaml", "engine:\n  node_executor: async\n")
    monkeypatch.chdir(tmp_path)
    config = load_config()
    assert config.path == Path.cwd() / "hypernodes.yaml"
    assert config.engine == {"node_executor": "async"}


def test_yml_is_found_too(tmp_path: Path) -> None:
    write(tmp_path / "hypernodes.yml", "engine:\n  max_workers: 3\n")
    assert load_config(directory=tmp_path).engine == {"max_workers": 3}


def test_yaml_and_yml_together_is_an_error(tmp_path: Path) -> None:
    write(tmp_path / "hypernodes.yaml", "")
    write(tmp_path / "hypernodes.yml", "")
    with pytest.raises(ConfigError, match=r"hypernodes\.yaml and .*hypernodes\.yml exist"):
        find_config(tmp_path)


def test_pyproject_table_is_found(tmp_path: Path) -> None:
    write(
        tmp_path / "pyproject.toml",
        '[project]\nname = "x"\n\n[tool.hypernodes]\ncache_dir = "c"\n\n'
        '[tool.hypernodes.engine]\nnode_executor = "threaded"\nmax_workers = 2\n',
    )
    config = load_config(directory=tmp_path)
    assert config.path == tmp_path / "pyproject.toml"
    assert config.engine == {"node_executor": "threaded", "max_workers": 2}
    assert config.cache_dir == tmp_path / "c"


def test_pyproject_without_the_table_is_ignored(tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", '[project]\nname = "x"\n')
    assert find_config(tmp_path) is None


def test_yaml_wins_over_pyproject(tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", '[tool.hypernodes.engine]\nnode_executor = "threaded"\n')
    write(tmp_path / "hypernodes.yaml", "engine:\n  node_executor: async\n")
    assert load_config(directory=tmp_path).engine == {"node_executor": "async"}


# -- explicit files and formats -------------------------------------------------------


def test_explicit_file_replaces_discovery(tmp_path: Path) -> None:
    write(tmp_path / "hypernodes.yaml", "engine:\n  node_executor: async\n")
    other = write(tmp_path / "ci.yaml", "engine:\n  max_workers: 7\n")
    assert read_config(other).engine == {"max_workers": 7}
    assert load_config(other).engine == {"max_workers": 7}


def test_explicit_pyproject_without_table_is_an_error(tmp_path: Path) -> None:
    file = write(tmp_path / "pyproject.toml", '[project]\nname = "x"\n')
    with pytest.raises(ConfigError, match=r"no \[tool\.hypernodes\] table"):
        read_config(file)


def test_plain_toml_and_json_hold_settings_at_the_top(tmp_path: Path) -> None:
    toml = write(tmp_path / "hn.toml", '[engine]\nnode_executor = "async"\n')
    js = write(tmp_path / "hn.json", '{"engine": {"max_concurrent": 5}, "cache_dir": null}')
    assert read_config(toml).engine == {"node_executor": "async"}
    assert read_config(js).engine == {"max_concurrent": 5}
    assert read_config(js).cache_dir is None


def test_missing_explicit_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"config file '.*nope\.yaml' not found"):
        load_config(tmp_path / "nope.yaml")


def test_empty_yaml_is_an_empty_config(tmp_path: Path) -> None:
    file = write(tmp_path / "hypernodes.yaml", "# nothing yet\n")
    assert read_config(file) == ConfigFile(path=file)


def test_explicit_null_is_kept_for_the_merge(tmp_path: Path) -> None:
    file = write(tmp_path / "hypernodes.yaml", "engine:\n  max_workers: null\n")
    assert read_config(file).engine == {"max_workers": None}


def test_relative_cache_dir_is_relative_to_the_file(tmp_path: Path) -> None:
    sub = tmp_path / "conf"
    sub.mkdir()
    file = write(sub / "hypernodes.yaml", "cache_dir: ../.cache\n")
    assert read_config(file).cache_dir == sub / "../.cache"
    absolute = write(tmp_path / "abs.yaml", f"cache_dir: {tmp_path / 'x'}\n")
    assert read_config(absolute).cache_dir == tmp_path / "x"


def test_file_settings_build_the_same_engine_as_python(tmp_path: Path) -> None:
    file = write(
        tmp_path / "hypernodes.yaml", "engine:\n  node_executor: async\n  max_workers: 4\n"
    )
    engine = HyperNodesEngine.from_config(read_config(file).engine)
    assert (engine.node_executor, engine.max_workers) == ("async", 4)


# -- malformed files: one message with the file and the position ----------------------


def test_malformed_yaml_gives_line_and_column(tmp_path: Path) -> None:
    file = write(tmp_path / "hypernodes.yaml", "engine:\n  node_executor: async\n   bad: [1, 2\n")
    with pytest.raises(ConfigError) as info:
        read_config(file)
    message = str(info.value)
    assert str(file) in message
    assert "invalid YAML at line 3, column" in message


def test_malformed_toml_gives_the_position(tmp_path: Path) -> None:
    file = write(tmp_path / "pyproject.toml", "[tool.hypernodes\nx = 1\n")
    with pytest.raises(ConfigError, match=r"pyproject\.toml: invalid TOML: .*line 1"):
        read_config(file)


def test_malformed_json_gives_line_and_column(tmp_path: Path) -> None:
    file = write(tmp_path / "hn.json", '{\n  "engine": {,}\n}')
    with pytest.raises(ConfigError, match=r"hn\.json: invalid JSON at line 2, column 14"):
        read_config(file)


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    file = write(tmp_path / "hypernodes.yaml", "- a\n- b\n")
    with pytest.raises(ConfigError, match=r"top level must be a mapping .* got list"):
        read_config(file)


# -- unknown keys and bad values name the file -----------------------------------------


def test_unknown_top_level_key_suggests_and_lists(tmp_path: Path) -> None:
    file = write(tmp_path / "hypernodes.yaml", "engin:\n  node_executor: async\n")
    with pytest.raises(ConfigError) as info:
        read_config(file)
    message = str(info.value)
    assert f"{file}: unknown setting 'engin'" in message
    assert "did you mean 'engine'" in message
    assert "valid keys are engine, cache_dir" in message


def test_engine_key_at_the_top_level_says_where_it_goes(tmp_path: Path) -> None:
    file = write(tmp_path / "hypernodes.yaml", "node_executor: async\n")
    with pytest.raises(ConfigError, match="engine settings go under 'engine:'"):
        read_config(file)


def test_unknown_engine_key_names_it_and_the_valid_keys(tmp_path: Path) -> None:
    file = write(tmp_path / "hypernodes.yaml", "engine:\n  max_worker: 4\n")
    with pytest.raises(ConfigError) as info:
        read_config(file)
    message = str(info.value)
    assert str(file) in message
    assert "'max_worker'" in message and "did you mean 'max_workers'" in message
    assert "node_executor, map_executor, max_workers, max_concurrent, address" in message


def test_unknown_executor_in_a_file_names_the_file(tmp_path: Path) -> None:
    file = write(tmp_path / "hypernodes.yaml", "engine:\n  node_executor: asynk\n")
    with pytest.raises(InvalidExecutorError) as info:
        read_config(file)
    assert str(file) in str(info.value)
    assert "'async'" in str(info.value)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("engine: async\n", "'engine' must be a mapping"),
        ("engine:\n  max_workers: 0\n", "max_workers must be an integer >= 1"),
        ("engine:\n  max_workers: many\n", "max_workers must be an integer >= 1"),
        ("engine:\n  address: 8786\n", "address must be a string"),
        ("cache_dir: [a]\n", "'cache_dir' must be a path string"),
    ],
)
def test_bad_values(tmp_path: Path, text: str, match: str) -> None:
    file = write(tmp_path / "hypernodes.yaml", text)
    with pytest.raises(ConfigError, match=match):
        read_config(file)
