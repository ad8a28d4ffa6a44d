"""Pools of instruction templates: data model, validation, rendering, deterministic drawing, files."""

from .errors import PoolValidationError, UserError, first_line, short_value, unknown_key_error
from .io import (
    atomic_write_text,
    builtin_names,
    is_blank,
    load_pool,
    read_jsonl,
    read_pool,
    read_yaml,
    read_yaml_mapping,
    write_jsonl,
    write_pool,
)
from .pool import SPLITS, FieldSpec, PromptPool, Template
from .sampling import draw_index, unit_hash
from .template import normalise_whitespace, placeholders, render

__all__ = [
    "SPLITS",
    "FieldSpec",
    "PoolValidationError",
    "PromptPool",
    "Template",
    "UserError",
    "atomic_write_text",
    "builtin_names",
    "draw_index",
    "first_line",
    "is_blank",
    "load_pool",
    "normalise_whitespace",
    "placeholders",
    "read_jsonl",
    "read_pool",
    "read_yaml",
    "read_yaml_mapping",
    "render",
    "short_value",
    "unit_hash",
    "unknown_key_error",
    "write_jsonl",
    "write_pool",
]
