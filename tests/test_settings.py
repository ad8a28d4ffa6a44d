"""The one settings reader: types, choices and positive counts checked once; unknown keys at any depth named."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pytest

from paft_rl.settings import (
    SettingError,
    Settings,
    option,
    parse_settings,
    read_settings_file,
    settings_from_mapping,
    settings_parser,
)
from prompt_pool import UserError


@dataclass
class Inner(Settings):
    limit: int | None = option(None, help="questions", positive=True)
    mode: Literal["a", "b"] = option("a", help="mode")


@dataclass
class Outer(Settings):
    name: str = option(help="a name")
    rate: float = option(0.5, help="a rate")
    inner: Inner | None = option(None, help="a section")
    items: list[Inner] = option(help="sections", default_factory=list)


def test_nested_sections_become_dataclasses():
    built = settings_from_mapping(Outer, {"name": "x", "rate": 1, "inner": {"limit": 3},
                                          "items": [{"mode": "b"}]}, "run.yaml")
    assert built.inner == Inner(limit=3)
    assert built.items == [Inner(mode="b")]
    assert built.rate == 1


@pytest.mark.parametrize("mapping, message", [
    ({"name": "x", "inner": {"limt": 3}}, "run.yaml.inner: unknown key 'limt'; did you mean 'limit'?"),
    ({"name": "x", "items": [{}, {"mood": "a"}]}, "run.yaml.items[1]: unknown key 'mood'; did you mean 'mode'?"),
    ({"name": "x", "inner": {"limit": 0}}, "run.yaml.inner.limit must be a positive number, got 0"),
    ({"name": "x", "inner": {"mode": "c"}}, "run.yaml.inner.mode must be one of a, b, got 'c'"),
    ({"name": "x", "rate": "fast"}, "run.yaml.rate must be a number, got 'fast'"),
    ({"name": "x", "inner": {"limit": True}}, "run.yaml.inner.limit must be a whole number, got True"),
    ({"name": "x", "inner": [1]}, "run.yaml.inner: must be a mapping"),
    ({"rate": 1.0}, "run.yaml: set name"),
])
def test_bad_values_and_keys_are_named_with_their_path(mapping, message):
    with pytest.raises(UserError) as error:
        settings_from_mapping(Outer, mapping, "run.yaml")
    assert str(error.value).startswith(message)


def test_building_in_code_checks_the_same_way():
    with pytest.raises(SettingError, match="limit must be a positive number, got -1"):
        Inner(limit=-1)


@dataclass
class Flat(Settings):
    task: str = option(help="task")
    limit: int | None = option(None, help="questions", positive=True)
    scoring: Literal["generate", "loglik"] = option("generate", help="scoring")


def test_command_line_and_file_are_read_the_same_way(tmp_path):
    config = tmp_path / "f.yaml"
    config.write_text("task: t\nlimit: 4\n")
    (flat,) = parse_settings(settings_parser(Flat, "x"), ["--config", str(config), "--scoring", "loglik"])
    assert flat == Flat(task="t", limit=4, scoring="loglik")
    (flat,) = parse_settings(settings_parser(Flat, "x"), ["--task", "t", "--limit", "2"])
    assert flat.limit == 2


@dataclass
class Listing(Settings):
    models: list[str] = option(help="models")


def test_a_list_option_given_twice_is_refused_not_cut_to_the_last():
    (listing,) = parse_settings(settings_parser(Listing, "x"), ["--models", "a", "b"])
    assert listing.models == ["a", "b"]
    with pytest.raises(UserError, match="^--models is given twice: list every value after one --models"):
        parse_settings(settings_parser(Listing, "x"), ["--models", "a", "--models", "b"])


@pytest.mark.parametrize("argv, file, message", [
    (["--task", "t", "--limt", "2"], None, "command line: unknown option '--limt'; did you mean '--limit'?"),
    ([], "task: t\nscorng: loglik\n", "f.yaml: unknown option 'scorng'; did you mean 'scoring'?"),
    ([], "task: t\nlimit: 0\n", "option limit must be a positive number, got 0"),
    ([], "task: t\nscoring: other\n", "option scoring must be one of generate, loglik, got 'other'"),
    (["--task", "t", "--scoring", "other"], None, "option scoring: invalid choice"),
])
def test_command_line_errors_are_one_line(tmp_path, argv, file, message):
    if file is not None:
        (tmp_path / "f.yaml").write_text(file)
        argv = ["--config", str(tmp_path / "f.yaml"), *argv]
    with pytest.raises(UserError) as error:
        parse_settings(settings_parser(Flat, "x"), argv)
    assert str(error.value).startswith(message)
    assert "\n" not in str(error.value)


@dataclass
class Flags(Settings):
    config: str = option(help="a file with nested sections")
    fresh: bool = option(False, help="start over")


def test_a_command_with_a_nested_file_reads_it_itself(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("name: x\ninner: {limt: 2}\n")
    (flags,) = parse_settings(settings_parser(Flags, "x"), ["--config", str(config), "--fresh"])
    assert flags == Flags(config=str(config), fresh=True)
    with pytest.raises(UserError, match=r"^run.yaml.inner: unknown key 'limt'; did you mean 'limit'\?"):
        read_settings_file(Outer, flags.config, "run config")


@dataclass
class Ranged(Settings):
    share: float = option(0.5, help="a share", interval=("(", 0, 1, ")"))
    wait: float = option(1.0, help="seconds", interval=("[", 0, None, ")"))


@pytest.mark.parametrize("values, message", [
    ({"share": 1}, "share must be in (0, 1), got 1"),
    ({"share": 0.0}, "share must be in (0, 1), got 0.0"),
    ({"wait": -1}, "wait must be >= 0, got -1"),
])
def test_a_declared_interval_is_checked(values, message):
    assert Ranged(share=0.99, wait=0) == Ranged(0.99, 0)
    with pytest.raises(SettingError) as error:
        Ranged(**values)
    assert str(error.value) == message
