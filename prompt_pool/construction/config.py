"""The configuration of one ``pool generate`` run, read from YAML and checked before any request is sent.

Every mistake a user can make in the file (an unknown key, a missing API key variable, a few-shot mode
without seed templates, a task that does not exist) is reported here, in one line naming the key to change,
so a run never fails half-way through an expensive generation for a reason visible up front.
"""

from __future__ import annotations

import difflib
import os
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from ..errors import UserError

MODES = ("few_shot", "zero_shot")
BACKENDS = ("openai", "transformers", "vllm")


@dataclass(frozen=True)
class TaskSpec:
    """What the generator must know about a task: its fields, which are required, and its answer cue.

    Satisfies `prompt_pool.pool.FieldSpec`, so `PromptPool.problems` validates templates against it.

    Args:
        name (`str`): task name (a registry name or the user's own).
        description (`str`): one or two sentences on what the model answering the prompt must do.
        fields (`tuple[str, ...]`): placeholders a template may use.
        required_fields (`tuple[str, ...]`): placeholders every template must use.
        option_sets (`tuple[tuple[str, ...], ...]`): for multiple choice, the ways a template may show options.
        answer_cue (`str`): text every template must contain (case-insensitive), e.g. ``Answer:``; empty: no check.
    """

    name: str
    description: str
    fields: tuple[str, ...]
    required_fields: tuple[str, ...] = ()
    option_sets: tuple[tuple[str, ...], ...] = ()
    answer_cue: str = ""


@dataclass
class GeneratorConfig:
    """One member of the generator ensemble.

    Args:
        name (`str`): label used in provenance, the cache key and the report.
        model (`str`): model name at the endpoint, or a local folder / hub id for local backends.
        backend (`str`, defaults to `"openai"`): ``openai`` (any OpenAI-compatible chat endpoint),
            ``transformers`` or ``vllm`` (offline ``vllm.LLM``).
        base_url (`str`, *optional*): endpoint root such as ``http://127.0.0.1:8000/v1`` (``openai`` only).
        api_key_env (`str`, *optional*): name of the environment variable holding the API key.
        max_tokens (`int`, defaults to `1024`): completion budget per request.
        temperature (`float`, *optional*): overrides the run's temperature for this generator.
        concurrency (`int`, *optional*): at most this many requests in flight to this endpoint.
        extra_body (`dict`, *optional*): extra fields merged into each chat request body.
        device (`str`, defaults to `"cpu"`): ``transformers`` only.
        dtype (`str`, defaults to `"auto"`): ``transformers`` only (``auto``, ``float32``, ``bfloat16``...).
        batch_size (`int`, defaults to `4`): prompts per ``generate`` call for local backends.
        threads (`int`, *optional*): torch CPU threads (``transformers`` only); on a CPU shared with other jobs,
            ``1`` can be many times faster than competing threads.
        engine_kwargs (`dict`, *optional*): keyword arguments of ``vllm.LLM`` (``vllm`` only).
    """

    name: str
    model: str
    backend: str = "openai"
    base_url: str | None = None
    api_key_env: str | None = None
    max_tokens: int = 1024
    temperature: float | None = None
    concurrency: int | None = None
    extra_body: dict = field(default_factory=dict)
    device: str = "cpu"
    dtype: str = "auto"
    batch_size: int = 4
    threads: int | None = None
    engine_kwargs: dict = field(default_factory=dict)

    @property
    def api_key(self) -> str | None:
        return os.environ.get(self.api_key_env) if self.api_key_env else None

    def identity(self) -> dict:
        """What makes two generators produce different responses (part of the cache key)."""
        return {"name": self.name, "backend": self.backend, "model": self.model, "base_url": self.base_url,
                "max_tokens": self.max_tokens, "extra_body": self.extra_body}


@dataclass
class RequestConfig:
    """Network behaviour of the HTTP generators.

    Args:
        concurrency (`int`, defaults to `8`): requests in flight at once, over all endpoints.
        timeout (`float`, defaults to `120`): seconds to wait for one response.
        retries (`int`, defaults to `4`): further tries after a 429, a 5xx, a malformed body or a connection error.
        backoff (`float`, defaults to `1.0`): first wait in seconds; doubles each retry (with jitter).
        backoff_max (`float`, defaults to `30.0`): longest wait, also the cap on a server's ``Retry-After``.
    """

    concurrency: int = 8
    timeout: float = 120.0
    retries: int = 4
    backoff: float = 1.0
    backoff_max: float = 30.0


@dataclass
class FilterConfig:
    """Filters applied to parsed candidates, in this order (each step is counted in the report).

    Args:
        min_chars (`int`, defaults to `20`): shortest template, counted without its placeholders.
        max_chars (`int`, defaults to `2000`): longest template.
        require_answer_cue (`bool`, defaults to `True`): drop templates without the task's answer cue.
        ngram (`int`, defaults to `3`): word n-gram size of the near-duplicate test and diversity stats.
        near_duplicate_threshold (`float`, defaults to `0.7`): drop a template whose n-gram Jaccard similarity
            with an earlier kept one is above this; ``1.0`` turns the test off.
    """

    min_chars: int = 20
    max_chars: int = 2000
    require_answer_cue: bool = True
    ngram: int = 3
    near_duplicate_threshold: float = 0.7


@dataclass
class ScreenConfig:
    """Optional accuracy screen: drop templates a reference model answers badly with (uses `paft_rl.eval`).

    Args:
        enabled (`bool`, defaults to `False`): run the screen.
        model (`str`, *optional*): reference model (local folder or hub id).
        dev_size (`int`, defaults to `16`): dev questions per template.
        min_accuracy (`float`, defaults to `0.0`): drop templates scoring below this.
        data (`str`, *optional*): dev data file; defaults to the registry task's data.
        split (`str`, *optional*): dev split name.
        batch_size (`int`, defaults to `16`): prompts per generation batch.
    """

    enabled: bool = False
    model: str | None = None
    dev_size: int = 16
    min_accuracy: float = 0.0
    data: str | None = None
    split: str | None = None
    batch_size: int = 16


@dataclass
class SplitConfig:
    """Train / held-out split of the filtered pool.

    Args:
        heldout_fraction (`float`, defaults to `0.2`): share of generated templates held out.
        seed (`int`, defaults to `0`): split seed (the split is a hash of seed and template id).
        include_seeds (`bool`, defaults to `True`): put the human-written seed templates in the pool too.
        seeds_to_heldout (`bool`, defaults to `False`): seeds all go to held-out (as PAFT evaluated on
            human-written prompts); the fraction then applies to generated templates only.
    """

    heldout_fraction: float = 0.2
    seed: int = 0
    include_seeds: bool = True
    seeds_to_heldout: bool = False


@dataclass
class GenerateConfig:
    """A whole ``pool generate`` run.

    Args:
        task (`TaskSpec`): the task templates are written for.
        generators (`list[GeneratorConfig]`): the ensemble.
        seed_templates (`list[str]`): human-written examples shown in few-shot mode.
        modes (`tuple[str, ...]`, defaults to both): ``few_shot`` and/or ``zero_shot``.
        per_model_per_mode (`int`, defaults to `20`): candidates kept per generator and mode (PAFT: 20).
        templates_per_request (`int`, defaults to `5`): templates asked for in one request.
        few_shot_examples (`int`, defaults to `4`): seed templates shown per few-shot request.
        temperature (`float`, defaults to `0.9`) / top_p (`float`, defaults to `1.0`): sampling.
        seed (`int`, defaults to `0`): picks the few-shot examples of each request.
        cache (`str`, *optional*): response cache file; ``None`` means ``<out>.cache.jsonl``, ``""`` disables it.
        metaprompts (`dict[str, str]`, *optional*): your own meta-prompt files by name (``system``, ``few_shot``,
            ``zero_shot``), replacing the shipped ones; ``$description``, ``$placeholder_rules``, ``$cue_rule``,
            ``$count``, ``$first_field`` and (few-shot) ``$examples`` are filled in.
    """

    task: TaskSpec
    generators: list[GeneratorConfig]
    seed_templates: list[str] = field(default_factory=list)
    modes: tuple[str, ...] = MODES
    per_model_per_mode: int = 20
    templates_per_request: int = 5
    few_shot_examples: int = 4
    temperature: float = 0.9
    top_p: float = 1.0
    seed: int = 0
    cache: str | None = None
    metaprompts: dict[str, str] = field(default_factory=dict)
    requests: RequestConfig = field(default_factory=RequestConfig)
    filters: FilterConfig = field(default_factory=FilterConfig)
    screen: ScreenConfig = field(default_factory=ScreenConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    registry_task: str | None = None

    @property
    def requests_per_mode(self) -> int:
        return -(-self.per_model_per_mode // self.templates_per_request)

    def temperature_of(self, generator: GeneratorConfig) -> float:
        return self.temperature if generator.temperature is None else generator.temperature


# ---------------------------------------------------------------------------- loading
SECTIONS = {"requests": RequestConfig, "filters": FilterConfig, "screen": ScreenConfig, "split": SplitConfig}


def load_config(path: str | Path) -> GenerateConfig:
    """Read and check a generate config file; relative file paths in it are relative to the file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise UserError(f"{path.name}: not valid YAML ({getattr(error, 'problem', error)})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path.name}: expected a mapping of settings at the top level")
    return config_from_dict(data, base_dir=path.parent, where=path.name)


def config_from_dict(data: dict[str, Any], base_dir: str | Path = ".", where: str = "config") -> GenerateConfig:
    """Build a `GenerateConfig` from a plain mapping (the parsed YAML) and check it."""
    data = dict(data)
    if "registry_task" in data:
        raise UserError(f"{where}: unknown key 'registry_task'; name a registry task with 'task: NAME'")
    if "task" not in data:
        raise UserError(f"{where}: missing 'task': a registry name (e.g. synth_mc) or a mapping with fields")
    if not data.get("generators"):
        raise UserError(f"{where}: 'generators' must list at least one generator (name, model, backend)")
    raw_task = data.pop("task")
    registry = raw_task if isinstance(raw_task, str) else None
    task = resolve_task(raw_task, data.pop("description", None), where)
    generators = [_build(GeneratorConfig, g, f"{where}: generators[{i}]") for i, g in enumerate(data.pop("generators"))]
    seeds = _seed_templates(data.pop("seed_templates", []), Path(base_dir), where)
    if data.get("cache"):  # like every file in the config, relative to the config file
        data["cache"] = str(Path(base_dir) / Path(data["cache"]).expanduser())
    data["metaprompts"] = _metaprompt_files(data.get("metaprompts") or {}, Path(base_dir), where)
    sections = {key: _build(cls, data.pop(key, None) or {}, f"{where}: {key}") for key, cls in SECTIONS.items()}
    if "modes" in data:
        data["modes"] = tuple(data["modes"]) if isinstance(data["modes"], (list, tuple)) else (data["modes"],)
    config = _build(GenerateConfig, {**data, "task": task, "generators": generators, "seed_templates": seeds,
                                     "registry_task": registry, **sections}, where)
    check_config(config, where)
    return config


def resolve_task(raw: Any, description: str | None, where: str) -> TaskSpec:
    """A `TaskSpec` from a registry name (looked up in `paft_rl.tasks`) or an inline mapping."""
    if isinstance(raw, str):
        from paft_rl.tasks import get_task  # lazy: prompt_pool never needs paft_rl for inline tasks

        task = get_task(raw)
        return TaskSpec(name=task.name, description=description or task.description, fields=tuple(task.fields),
                        required_fields=tuple(task.required_fields),
                        option_sets=tuple(tuple(s) for s in task.option_sets), answer_cue=task.answer_cue)
    if not isinstance(raw, dict):
        raise UserError(f"{where}: 'task' must be a registry name or a mapping, got {type(raw).__name__}")
    raw = dict(raw)
    if description is not None:
        raw.setdefault("description", description)
    for key in ("name", "description", "fields"):
        if not raw.get(key):
            raise UserError(f"{where}: task.{key} is required for an inline task")
    raw["fields"] = tuple(raw["fields"])
    raw["required_fields"] = tuple(raw.get("required_fields") or ())
    raw["option_sets"] = tuple(tuple(s) for s in raw.get("option_sets") or ())
    raw["answer_cue"] = str(raw.get("answer_cue") or "")
    spec = _build(TaskSpec, raw, f"{where}: task")
    unknown = (set(spec.required_fields) | {f for s in spec.option_sets for f in s}) - set(spec.fields)
    if unknown:
        raise UserError(f"{where}: task fields {sorted(unknown)} are required or in option_sets but not in task.fields")
    return spec


def _seed_templates(raw: Any, base_dir: Path, where: str) -> list[str]:
    """Seed templates inline (strings or ``{text: ...}``), or from a pool: a file path or built-in pool name,
    optionally as ``{pool: ..., split: train|heldout|all}``."""
    if isinstance(raw, dict) and "pool" in raw:
        return _seed_pool_texts(str(raw["pool"]), str(raw.get("split", "all")), base_dir)
    if isinstance(raw, str):
        return _seed_pool_texts(raw, "all", base_dir)
    if not isinstance(raw, list):
        raise UserError(f"{where}: seed_templates must be a list of templates, a pool file or built-in pool name, "
                        "or {pool: ..., split: ...}")
    texts = [item.get("text") if isinstance(item, dict) else item for item in raw]
    bad = [i for i, text in enumerate(texts) if not isinstance(text, str) or not text.strip()]
    if bad:
        raise UserError(f"{where}: seed_templates[{bad[0]}] is not a non-empty string (or a mapping with 'text')")
    return texts


def _seed_pool_texts(spec: str, split: str, base_dir: Path) -> list[str]:
    from ..io import load_pool

    path = Path(spec).expanduser()
    path = path if path.is_absolute() else base_dir / path
    pool = load_pool(path if path.exists() else spec)
    return [t.text for t in pool.subset(split).templates]


def _metaprompt_files(raw: Any, base_dir: Path, where: str) -> dict[str, str]:
    """Resolve user meta-prompt files (relative to the config file) and check that they exist."""
    if not isinstance(raw, dict):
        raise UserError(f"{where}: metaprompts must map system / few_shot / zero_shot to files")
    resolved = {}
    for name, file in raw.items():
        if name not in ("system", *MODES):
            raise UserError(f"{where}: metaprompts.{name}: use system, few_shot or zero_shot")
        path = Path(file).expanduser()
        path = path if path.is_absolute() else base_dir / path
        if not path.is_file():
            raise UserError(f"{where}: metaprompts.{name}: file {str(path)!r} does not exist")
        resolved[name] = str(path)
    return resolved


def check_config(config: GenerateConfig, where: str = "config") -> None:
    """Every problem that would make the run fail or be useless, raised before any work starts."""
    bad_modes = [m for m in config.modes if m not in MODES]
    if bad_modes or not config.modes:
        raise UserError(f"{where}: modes must be a non-empty list of {', '.join(MODES)}; got {list(config.modes)}")
    if "few_shot" in config.modes and not config.seed_templates:
        raise UserError(f"{where}: few_shot mode needs seed_templates (human-written examples); add some or use modes: [zero_shot]")
    for name in ("per_model_per_mode", "templates_per_request", "few_shot_examples"):
        if int(getattr(config, name)) < 1:
            raise UserError(f"{where}: {name} must be at least 1, got {getattr(config, name)}")
    if not 0 < config.split.heldout_fraction < 1:
        raise UserError(f"{where}: split.heldout_fraction must be between 0 and 1, got {config.split.heldout_fraction}")
    if config.requests.concurrency < 1 or config.requests.retries < 0:
        raise UserError(f"{where}: requests.concurrency must be >= 1 and requests.retries >= 0")
    if config.screen.enabled and not config.screen.model:
        raise UserError(f"{where}: screen.enabled needs screen.model (a reference model folder or hub id)")
    _check_generators(config.generators, where)
    _check_seeds(config, where)
    from .screen import check_screen

    check_screen(config, where)


def _check_generators(generators: list[GeneratorConfig], where: str) -> None:
    names = [g.name for g in generators]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise UserError(f"{where}: generator names must be unique; repeated: {', '.join(repeated)}")
    for g in generators:
        if g.backend not in BACKENDS:
            raise UserError(f"{where}: generator {g.name!r} has backend {g.backend!r}; use one of {', '.join(BACKENDS)}")
        if g.backend == "openai" and not g.base_url:
            raise UserError(f"{where}: generator {g.name!r} needs base_url (e.g. http://127.0.0.1:8000/v1)")
        if g.api_key_env and not os.environ.get(g.api_key_env):
            raise UserError(f"{where}: generator {g.name!r} reads its API key from ${g.api_key_env}, which is not set; "
                            f"export {g.api_key_env}=... or remove api_key_env")


def _check_seeds(config: GenerateConfig, where: str) -> None:
    """Seed templates are shown to the models as examples of valid templates: they must be valid."""
    from ..pool import PromptPool, Template

    pool = PromptPool([Template(f"seed-{i}", text) for i, text in enumerate(config.seed_templates)], name="seed_templates")
    problems = pool.problems(config.task) if config.seed_templates else []
    if problems:
        raise UserError(f"{where}: seed_templates are not valid for task {config.task.name!r}: {problems[0]}"
                        + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))


def _build(cls, values: Any, where: str):
    """Instantiate dataclass ``cls`` from ``values``, naming any unknown key with a suggestion."""
    if not isinstance(values, dict):
        raise UserError(f"{where}: expected a mapping, got {type(values).__name__}")
    known = {f.name for f in fields(cls)}
    for key in values:
        if key not in known:
            close = difflib.get_close_matches(str(key), sorted(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(sorted(known))})"
            raise UserError(f"{where}: unknown key {key!r}{hint}")
    _check_scalar_types(cls, values, where)
    try:
        return cls(**values)
    except TypeError as error:
        raise UserError(f"{where}: {error}") from None


SCALAR_NAMES = {int: "a whole number", float: "a number", bool: "true or false", str: "text"}


def _check_scalar_types(cls, values: dict, where: str) -> None:
    """A scalar setting of the wrong type (``per_model_per_mode: four``) is named with the type it needs."""
    hints = typing.get_type_hints(cls)
    for key, value in values.items():
        hint = hints[key]
        union = typing.get_origin(hint) in (typing.Union, types.UnionType)
        allowed = [t for t in (typing.get_args(hint) if union else (hint,)) if t is not type(None)]
        if value is None or not allowed or not all(t in SCALAR_NAMES for t in allowed):
            continue
        fits = any(isinstance(value, t) and not (t in (int, float) and isinstance(value, bool)) for t in allowed)
        fits = fits or (float in allowed and isinstance(value, int) and not isinstance(value, bool))
        if not fits:
            need = " or ".join(SCALAR_NAMES[t] for t in allowed)
            raise UserError(f"{where}: {key} must be {need}, got {value!r}")


__all__ = ["BACKENDS", "MODES", "FilterConfig", "GenerateConfig", "GeneratorConfig", "RequestConfig",
           "ScreenConfig", "SplitConfig", "TaskSpec", "check_config", "config_from_dict", "load_config",
           "resolve_task"]
