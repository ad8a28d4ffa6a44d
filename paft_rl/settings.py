"""One way to read settings, for every command: dataclasses with help on every field.

A command's settings are a dataclass. ``paft-rl X --config F.yaml --key value`` is read by TRL's parser (the
same one ``paft-rl sft|grpo`` use), so a YAML key and a ``--key`` flag are the same name. A file with nested
sections (a pipeline's ``eval:``, a sequence's ``tasks:``) is read by `read_settings_file` into dataclasses
holding dataclasses; such a command's flags dataclass has its own ``config`` field naming the file.

Either way the values are checked once, in the dataclass's ``__post_init__`` (`Settings`): types from the
annotations, choices from ``Literal``, numbers against the range the field declares (``positive``,
``interval``). An error names the option the way the user wrote it (``--batch_size``,
``pipeline.yaml.eval.limit``); an unknown key at any depth gets a did-you-mean. All of it happens before a
model is loaded.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

from prompt_pool import UserError, first_line, read_yaml_mapping, unknown_key_error


class SettingError(UserError):
    """A bad value for one setting; the reader says where the setting was written."""

    def __init__(self, name: str, problem: str):
        super().__init__(f"{name} {problem}")
        self.name = name
        self.problem = problem


def option(default: Any = dataclasses.MISSING, *, help: str, positive: bool = False,
           interval: tuple[str, float, float | None, str] | None = None, default_factory=None, **metadata) -> Any:
    """A settings field: its help text, and the numbers it accepts when set.

    ``positive``: above 0. ``interval``: brackets and bounds, ``("[", 0, 1, "]")`` for 0 <= x <= 1,
    ``("(", 0, 1, ")")`` for 0 < x < 1, ``("[", 0, None, ")")`` for x >= 0.
    """
    metadata = {"help": help, **metadata}
    if positive:
        metadata[CHECKS] = ("(", 0, None, ")")
    if interval is not None:
        metadata[CHECKS] = interval
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


CHECKS = "paft_rl_range"  # the metadata key; argparse is not shown it


def _range_problem(value: float, interval: tuple[str, float, float | None, str]) -> str | None:
    opening, low, high, closing = interval
    below = value <= low if opening == "(" else value < low
    above = high is not None and (value >= high if closing == ")" else value > high)
    if not (below or above):
        return None
    if high is None and opening == "(" and low == 0:
        return f"must be a positive number, got {value}"
    if high is None:
        return f"must be {'>' if opening == '(' else '>='} {low}, got {value}"
    return f"must be in {opening}{low}, {high}{closing}, got {value}"


@dataclasses.dataclass
class Settings:
    """Base of every settings dataclass: checks each value against its annotation when built."""

    def __post_init__(self) -> None:
        check_values(self)


def check_values(settings, declared_by: type | None = None) -> None:
    """Each field's value against its type (``Literal`` choices included) and its range (``positive``).

    ``declared_by``: only the fields that class declares (paft-rl's options mixed into TRL's configs).
    """
    hints = typing.get_type_hints(declared_by or type(settings))
    for field in dataclasses.fields(declared_by or settings):
        value = getattr(settings, field.name)
        problem = _type_problem(value, hints[field.name])
        if problem is None and CHECKS in field.metadata and _is_number(value):
            problem = _range_problem(value, field.metadata[CHECKS])
        if problem is not None:
            raise SettingError(field.name, problem)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _type_problem(value: Any, annotation: Any) -> str | None:
    """Why ``value`` does not fit ``annotation`` (``None`` when it does); nested dataclasses check themselves."""
    origin = typing.get_origin(annotation)
    if annotation is Any or (dataclasses.is_dataclass(annotation) and isinstance(value, annotation)):
        return None
    if origin is Literal:
        choices = typing.get_args(annotation)
        if value in choices:
            return None
        return f"must be one of {', '.join(map(str, choices))}, got {value!r}"
    if origin in (Union, types.UnionType):
        members = typing.get_args(annotation)
        if value is None and type(None) in members:
            return None
        problems = [_type_problem(value, member) for member in members if member is not type(None)]
        if any(problem is None for problem in problems):
            return None
        return problems[0] if len(problems) == 1 else f"has the wrong type: {value!r}"
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return f"must be a list, got {value!r}"
        inner = typing.get_args(annotation)[:1]
        for item in value if inner else ():
            problem = _type_problem(item, inner[0])
            if problem is not None:
                return f"item {item!r}: {problem}"
        return None
    if origin is dict:
        return None if isinstance(value, dict) else f"must be a mapping (key: value), got {value!r}"
    if annotation is float:
        return None if _is_number(value) else f"must be a number, got {value!r}"
    if annotation is int:
        whole = isinstance(value, int) and not isinstance(value, bool)
        return None if whole else f"must be a whole number, got {value!r}"
    if annotation is bool:
        return None if isinstance(value, bool) else f"must be true or false, got {value!r}"
    if annotation is str:
        return None if isinstance(value, str) else f"must be text, got {value!r}"
    if isinstance(annotation, type) and not isinstance(value, annotation):
        return f"must be a {annotation.__name__}, got {value!r}"
    return None


def settings_from_mapping(cls, mapping: Any, where: str):
    """``cls`` built from a YAML mapping: nested dataclass fields (and lists of them) from nested mappings.

    ``where`` names the place for messages (``pipeline.yaml: eval``); a bad key or value deeper down is named
    with its dotted path.
    """
    if isinstance(mapping, cls):
        return mapping
    if not isinstance(mapping, dict):
        raise UserError(f"{where}: must be a mapping (key: value), got {mapping!r}")
    fields = {field.name: field for field in dataclasses.fields(cls) if field.init}
    hints = typing.get_type_hints(cls)
    values = {}
    for key, value in mapping.items():
        if key not in fields:
            raise unknown_key_error(key, fields, where)
        values[key] = _nested(hints[key], value, f"{where}.{key}")
    missing = [name for name, field in fields.items() if name not in values and _required(field)]
    if missing:
        raise UserError(f"{where}: set {', '.join(missing)}")
    try:
        return cls(**values)
    except SettingError as error:
        raise UserError(f"{where}.{error.name} {error.problem}") from None


def read_settings_file(cls, path: str | Path, what: str):
    """``cls`` from a YAML file with nested sections (a pipeline, a sequence), named in messages by file name."""
    return settings_from_mapping(cls, read_yaml_mapping(path, what), Path(path).name)


def _required(field: dataclasses.Field) -> bool:
    return field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING


def _nested(annotation: Any, value: Any, where: str) -> Any:
    """A nested section built into its dataclass; other values as they are (the dataclass checks them)."""
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        members = [m for m in typing.get_args(annotation) if m is not type(None)]
        if value is not None and len(members) == 1:
            return _nested(members[0], value, where)
    if dataclasses.is_dataclass(annotation):
        return settings_from_mapping(annotation, value, where)
    if origin is list and isinstance(value, list):
        (inner,) = typing.get_args(annotation)
        if dataclasses.is_dataclass(inner):
            return [settings_from_mapping(inner, item, f"{where}[{i}]") for i, item in enumerate(value)]
    return value


def settings_parser(dataclass_types, prog: str):
    """TRL's parser for the dataclasses, raising one-line errors instead of printing the usage.

    A flags dataclass with its own ``config`` field (the command reads that file itself, `read_settings_file`)
    gets the plain dataclass parser under TrlParser, which leaves ``--config`` alone.
    """
    from trl import TrlParser
    from trl.scripts.utils import HfArgumentParser  # TRL's own copy: optional fields accept `none`, as in recipes

    dataclass_types = list(dataclass_types) if isinstance(dataclass_types, (list, tuple)) else [dataclass_types]
    own_file = any("config" in {f.name for f in dataclasses.fields(t)} for t in dataclass_types)

    class Parser(HfArgumentParser if own_file else TrlParser):
        def parse_args_and_config(self, args):
            if own_file:
                return self.parse_args_into_dataclasses(args=args)
            return super().parse_args_and_config(args)

        @staticmethod
        def _parse_dataclass_field(parser, field):
            # The parser hands every metadata key to argparse, which knows no ranges.
            if CHECKS in field.metadata:
                field = copy.copy(field)
                field.metadata = {k: v for k, v in field.metadata.items() if k != CHECKS}
            HfArgumentParser._parse_dataclass_field(parser, field)

    parser = Parser(dataclass_types, prog=prog)
    parser.error = _option_error
    return parser


def _option_error(message: str) -> None:
    """argparse's error hook: one line naming the option as a recipe writes it."""
    message = re.sub(r"argument --([\w-]+)(?:/--[\w-]+)*: ", lambda m: f"option {m.group(1).replace('-', '_')}: ",
                     message)
    raise UserError(message)


def check_options(parser: argparse.ArgumentParser, argv: list[str]) -> None:
    """Every key of the ``--config`` file and every ``--key`` on the command line must be an option.

    TRL's parser reports unknown file keys only after building the dataclasses, as a list; an unknown
    command-line option would print the whole usage first.
    """
    options = {name.lstrip("-") for action in parser._actions for name in action.option_strings}
    destinations = {action.dest for action in parser._actions} - {"help"}
    if "--config" in argv and "config" not in destinations:
        position = argv.index("--config") + 1
        if position >= len(argv):
            raise UserError("--config needs a YAML file: --config F.yaml")
        path = argv[position]
        for key in read_yaml_mapping(path, "config"):
            if key not in destinations and key != "env":
                raise unknown_key_error(key, destinations, Path(path).name, "option")
    lists = {name: action.dest for action in parser._actions if action.nargs in ("+", "*")
             for name in action.option_strings}
    seen_lists = []
    for token in argv:
        if token.startswith("--") and len(token) > 2:
            name = token[2:].split("=", 1)[0]
            if name != "config" and name not in options:
                raise unknown_key_error(f"--{name}", {f"--{d}" for d in destinations}, "command line", "option")
            if token in lists and lists[token] in seen_lists:  # argparse would keep the last one only
                raise UserError(f"{token} is given twice: list every value after one {token} (--{lists[token]} A B)")
            seen_lists.append(lists.get(token))


def parse_settings(parser: argparse.ArgumentParser, argv: list[str]) -> tuple:
    """The parser's dataclasses from ``--config F.yaml`` plus ``--key value`` overrides (the command line wins)."""
    check_options(parser, argv)
    return parsed(lambda: parser.parse_args_and_config(argv))


def check_declared_choices(settings) -> None:
    """Fields whose metadata lists ``choices`` (TRL's configs declare them so) hold one of them.

    argparse checks choices only on the command line; a value from a recipe file reaches the dataclass as a
    default, unchecked.
    """
    for field in dataclasses.fields(settings):
        choices = field.metadata.get("choices")
        value = getattr(settings, field.name)
        if choices is not None and value is not None and value not in choices:
            raise SettingError(field.name, f"must be one of {', '.join(map(str, choices))}, got {value!r}")


def parsed(parse, where: str | None = None):
    """``parse()``, its failures turned into one-line errors naming the option (as ``where.name`` for values
    written in a section of a file)."""
    try:
        results = parse()
        for settings in results:
            if dataclasses.is_dataclass(settings):
                check_declared_choices(settings)
        return results
    except SettingError as error:
        raise UserError(f"{where}.{error.name} {error.problem}" if where else
                        f"option {error.name} {error.problem}") from None
    except FileNotFoundError as error:
        raise UserError(f"file not found: {error.filename}") from None
    except UserError:
        raise
    except ValueError as error:  # transformers' TrainingArguments checks raise ValueError on conflicting options
        raise UserError(f"invalid options: {first_line(error)}") from None
