"""The one YAML loader: duplicate keys, nesting depth and alias bombs, for every kind of data file.

Each bad file must end in one line naming the file and the line, quickly, through the loader and the CLI.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bmsgate.app.config import config_from_mapping, load_config
from bmsgate.catalog import BUILTIN_DIR, Catalog, Kind
from bmsgate.datafiles import MAX_DEPTH, MAX_NODES, parse_yaml
from bmsgate.errors import BmsgateError, ConfigError, DefinitionError
from bmsgate.protocols import load_protocol_file

CONFIG = """\
batteries:
  - id: house
    protocol: jbd
    transport: {type: simulator, cells: 4}
outputs:
  mqtt: {host: localhost}
outputs:
  console: {}
"""

JBD = (BUILTIN_DIR / "protocols" / "jbd.yaml").read_text(encoding="utf-8")
GENERIC = (BUILTIN_DIR / "modbus" / "generic.yaml").read_text(encoding="utf-8")
PYLON = (BUILTIN_DIR / "can" / "pylon.yaml").read_text(encoding="utf-8")


def _line_of(text: str, prefix: str) -> int:
    return next(number for number, line in enumerate(text.splitlines(), 1) if line.startswith(prefix))


def _laughs(levels: int = 9) -> str:
    """The classic: each level a list of nine aliases to the one before, 9**levels leaves in all."""
    lines = ["l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def _error(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_yaml(text, error=lambda reason: ConfigError(reason, source="f.yaml"))
    return str(info.value)


# -- the loader --------------------------------------------------------------------------------------


def test_duplicate_keys_name_both_lines() -> None:
    assert _error("a: 1\nb: {c: 2, c: 3}\n") == (
        "f.yaml: line 2, column 11: invalid YAML: duplicate key 'c' (first at line 2, again at line 2)"
    )
    # Keys are compared as the mapping will hold them.
    assert "duplicate key '0x1' (first at line 1, again at line 2)" in _error("1: a\n0x1: b\n")


def test_merge_keys_may_be_overridden() -> None:
    text = "base: &base {host: a, port: 1}\nmine:\n  <<: *base\n  port: 2\n"
    assert parse_yaml(text, error=ConfigError) == {"base": {"host": "a", "port": 1}, "mine": {"host": "a", "port": 2}}


def test_nesting_up_to_the_bound_is_fine_and_beyond_it_is_refused() -> None:
    assert parse_yaml(_nested(MAX_DEPTH), error=ConfigError) is not None
    assert _error(_nested(MAX_DEPTH + 1)) == (
        f"f.yaml: line 1, column {MAX_DEPTH + 1}: invalid YAML: nested deeper than {MAX_DEPTH} levels"
    )
    assert "nested deeper than" in _error(_nested(5000))


def test_aliases_nesting_too_deep_once_expanded() -> None:
    chain = "l0: &l0 [1]\n" + "".join(f"l{i}: &l{i} [*l{i - 1}]\n" for i in range(1, MAX_DEPTH + 5))
    assert "nested deeper than 64 levels (aliases expanded)" in _error(chain)


def test_alias_bomb_is_refused_at_the_line_that_explodes() -> None:
    began = time.monotonic()
    message = _error(_laughs())
    assert time.monotonic() - began < 5
    # 9**6 leaves is the first level past the bound: the line of l5 (the sixth line).
    assert message == f"f.yaml: line 6, column 5: invalid YAML: aliases expand this to more than {MAX_NODES} nodes"


def test_modest_aliases_and_recursive_ones() -> None:
    assert parse_yaml(_laughs(4), error=ConfigError)["l3"][0][0][0] == ["lol"] * 9
    assert "recursive structure" in _error("&a [*a]")


# -- every kind of file -------------------------------------------------------------------------------


def test_config_with_two_outputs_blocks(tmp_path: Path) -> None:
    path = tmp_path / "bmsgate.yaml"
    path.write_text(CONFIG, encoding="utf-8")
    with pytest.raises(ConfigError, match=re.escape("duplicate key 'outputs' (first at line 5, again at line 7)")):
        load_config(path)


@pytest.mark.parametrize(
    ("kind", "builtin", "key"),
    [(Kind.PROTOCOL, JBD, "name:"), (Kind.REGISTER_MAP, GENERIC, "name:"), (Kind.CAN_PROFILE, PYLON, "name:")],
)
def test_data_files_with_a_duplicate_key(tmp_path: Path, kind: Kind, builtin: str, key: str) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(builtin + f"{key} again\n", encoding="utf-8")
    if kind is Kind.CAN_PROFILE:
        shutil.copy(BUILTIN_DIR / "can" / "pylon.dbc", tmp_path / "pylon.dbc")
    first, again = _line_of(builtin, key), len(builtin.splitlines()) + 1
    with pytest.raises(DefinitionError) as info:
        Catalog().load_file(kind, path)
    assert str(info.value) == (
        f"{path}: line {again}, column 1: invalid YAML: "
        f"duplicate key 'name' (first at line {first}, again at line {again})"
    )


def test_protocol_file_nested_too_deep(tmp_path: Path) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text(JBD + "extras: " + _nested(1000) + "\n", encoding="utf-8")
    with pytest.raises(DefinitionError, match="nested deeper than 64 levels"):
        load_protocol_file(path)


def test_a_mapping_handed_in_directly_is_bounded_too() -> None:
    shared: list[object] = ["lol"] * 10
    for _ in range(8):
        shared = [shared] * 10
    began = time.monotonic()
    with pytest.raises(ConfigError, match="more than 100000 values"):
        config_from_mapping({"batteries": [], "extra": shared})
    deep: list[object] = []
    for _ in range(1000):
        deep = [deep]
    with pytest.raises(ConfigError, match="nested deeper than 64 levels"):
        config_from_mapping({"batteries": [], "extra": deep})
    assert time.monotonic() - began < 5


# -- through the CLI ------------------------------------------------------------------------------------


_CONFIG_BOMB = (
    _laughs() + "batteries:\n  - id: house\n    protocol: jbd\n    transport: {type: simulator}\n    x: *l8\n"
)
_CONFIG_DEEP = "batteries:\n  - id: house\n    protocol: jbd\n    transport: " + _nested(1000) + "\n"


@pytest.mark.parametrize(
    ("command", "text", "expected"),
    [
        ("config", _CONFIG_BOMB, "line 6, column 5: invalid YAML: aliases expand this to more than 100000 nodes"),
        ("config", _CONFIG_DEEP, "line 4, column 77: invalid YAML: nested deeper than 64 levels"),
        ("config", CONFIG, "line 7, column 1: invalid YAML: duplicate key 'outputs' (first at line 5, again at line 7"),
        ("protocols", JBD + "x: " + _nested(1000) + "\n", "invalid YAML: nested deeper than 64 levels"),
        ("protocols", JBD + _laughs(), "invalid YAML: aliases expand this to more than 100000 nodes"),
    ],
    ids=["config-bomb", "config-deep", "config-duplicate", "protocol-deep", "protocol-bomb"],
)
def test_cli_check_prints_one_line_and_exits_2(tmp_path: Path, command: str, text: str, expected: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    began = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "bmsgate", command, "check", str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert time.monotonic() - began < 30  # interpreter start-up on a loaded machine; minutes before
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr[-2000:]
    assert result.stderr.startswith(f"bmsgate: error: {path}: ")
    assert expected in result.stderr


def test_the_error_types_stay_what_callers_catch() -> None:
    with pytest.raises(BmsgateError):
        parse_yaml("a: 1\na: 2\n", error=DefinitionError)
