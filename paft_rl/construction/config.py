"""The configuration of one ``pool generate`` run, read from YAML and checked before any request is sent.

The file is read the way every paft-rl settings file is (`paft_rl.settings`): each section is a dataclass
with help on every field, so an unknown key at any depth gets a did-you-mean with its dotted path
(``gen.yaml.generators[1]: unknown key 'modle'``) and each value is checked once against its type, its
choices and its range. What plain typing cannot say is resolved after that, in `resolve_references`: a task
named in the registry or written inline, seed templates read from a pool, meta-prompt files and the cache
relative to the config's folder. `check_config` then raises what would make the run fail or be useless (a
missing API key variable, few-shot mode without seed templates), so a run never stops half-way through an
expensive generation for a reason visible up front.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any, Literal

from prompt_pool.errors import UserError, unknown_key_error

from ..settings import SettingError, Settings, option, read_settings_file, settings_from_mapping

Mode = Literal["few_shot", "zero_shot"]
Backend = Literal["openai", "transformers", "vllm"]
MODES = typing.get_args(Mode)
BACKENDS = typing.get_args(Backend)
METAPROMPT_NAMES = ("system", *MODES)
# Generator options only one backend reads: set for another backend, they would be ignored without a word.
BACKEND_OPTIONS = {"base_url": "openai", "api_key_env": "openai", "extra_body": "openai", "concurrency": "openai",
                   "device": "transformers", "dtype": "transformers", "threads": "transformers",
                   "batch_size": "transformers", "engine_kwargs": "vllm"}


@dataclass
class TaskSpec(Settings):
    """What the generator must know about a task: its fields, which are required, and its answer cue.

    Satisfies `prompt_pool.pool.FieldSpec`, so `PromptPool.problems` validates templates against it. Written
    inline in a config as ``task: {name, description, fields, ...}``, or built from a registry task.
    """

    name: str = option(help="task name (a registry name or your own)")
    description: str = option(help="one or two sentences on what the model answering the prompt must do")
    fields: tuple[str, ...] = option(help="placeholders a template may use")
    required_fields: tuple[str, ...] = option((), help="placeholders every template must use")
    option_sets: tuple[tuple[str, ...], ...] = option(
        (), help="for multiple choice, the ways a template may show the options (each a list of placeholders)")
    answer_cue: str = option("", help="text every template must contain (case-insensitive), e.g. 'Answer:'; "
                                      "empty: no check")
    cloze: bool = option(False, help="multiple choice scored cloze style: a template shows only the context, never "
                                     "the options, and ends where the answer's text continues")

    def __post_init__(self) -> None:
        super().__post_init__()
        self.fields = tuple(self.fields)  # YAML gives lists; a spec is compared and shown as tuples
        self.required_fields = tuple(self.required_fields)
        self.option_sets = tuple(tuple(s) for s in self.option_sets)
        if not self.fields:
            raise SettingError("fields", "must list at least one placeholder")
        unknown = (set(self.required_fields) | {f for s in self.option_sets for f in s}) - set(self.fields)
        if unknown:
            raise SettingError("fields", f"must list every field named in required_fields and option_sets; "
                                         f"missing {sorted(unknown)}")


@dataclass
class GeneratorConfig(Settings):
    """One member of the generator ensemble."""

    name: str = option(help="label used in provenance, the cache key and the report")
    model: str = option(help="model name at the endpoint, or a local folder / hub id for local backends")
    backend: Backend = option("openai", help="openai (any OpenAI-compatible chat endpoint), transformers, or vllm "
                                             "(offline vllm.LLM)")
    base_url: str | None = option(None, help="endpoint root such as http://127.0.0.1:8000/v1 (openai only)")
    api_key_env: str | None = option(None, help="name of the environment variable holding the API key")
    max_tokens: int = option(1024, help="completion budget per request", positive=True)
    temperature: float | None = option(None, help="overrides the run's temperature for this generator",
                                        interval=("[", 0, None, ")"))
    concurrency: int | None = option(None, help="at most this many requests in flight to this endpoint",
                                     positive=True)
    extra_body: dict = option(help="extra fields merged into each chat request body", default_factory=dict)
    device: str = option("cpu", help="transformers only: the torch device")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = option(
        "auto", help="transformers only: the weights' dtype; auto: float32 on CPU, bfloat16 on GPU (as paft-rl eval)")
    batch_size: int = option(4, help="transformers only: prompts per generate call", positive=True)
    threads: int | None = option(None, help="torch CPU threads (transformers only); on a CPU shared with other "
                                            "jobs, 1 can be many times faster than competing threads", positive=True)
    engine_kwargs: dict = option(help="keyword arguments of vllm.LLM (vllm only)", default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.backend == "openai" and not self.base_url:
            raise SettingError("base_url", "is needed with backend openai (e.g. http://127.0.0.1:8000/v1)")
        defaults = {f.name: f.default if f.default_factory is MISSING else f.default_factory()
                    for f in dataclasses.fields(self)}
        for name, backend in BACKEND_OPTIONS.items():
            if backend != self.backend and getattr(self, name) != defaults[name]:
                raise SettingError(name, f"is read by backend {backend} only, and this generator's backend is "
                                         f"{self.backend}: remove it or change the backend")

    @property
    def api_key(self) -> str | None:
        return os.environ.get(self.api_key_env) if self.api_key_env else None

    def identity(self) -> dict:
        """What makes two generators produce different responses (part of the cache key)."""
        return {"name": self.name, "backend": self.backend, "model": self.model, "base_url": self.base_url,
                "max_tokens": self.max_tokens, "extra_body": self.extra_body}


@dataclass
class RequestConfig(Settings):
    """Network behaviour of the HTTP generators."""

    concurrency: int = option(8, help="requests in flight at once, over all endpoints", positive=True)
    timeout: float = option(120.0, help="seconds to wait for one response", positive=True)
    retries: int = option(4, help="further tries after a 429, a 5xx, a malformed body or a connection error",
                          interval=("[", 0, None, ")"))
    backoff: float = option(1.0, help="first wait in seconds; doubles each retry (with jitter)",
                            interval=("[", 0, None, ")"))
    backoff_max: float = option(30.0, help="longest wait in seconds, also the cap on a server's Retry-After",
                                 interval=("[", 0, None, ")"))


@dataclass
class FilterConfig(Settings):
    """Filters applied to parsed candidates, in this order (each step is counted in the report)."""

    min_chars: int = option(20, help="shortest template, counted without its placeholders",
                            interval=("[", 0, None, ")"))
    max_chars: int = option(2000, help="longest template", positive=True)
    require_answer_cue: bool = option(True, help="drop templates without the task's answer cue")
    ngram: int = option(3, help="word n-gram size of the near-duplicate test and the diversity stats", positive=True)
    near_duplicate_threshold: float = option(
        0.7, help="drop a template whose n-gram Jaccard similarity with an earlier kept one is above this; "
                  "1.0 turns the test off", interval=("[", 0, 1, "]"))

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.min_chars > self.max_chars:
            raise SettingError("min_chars", f"must not be above max_chars ({self.max_chars}), got {self.min_chars}")


@dataclass
class ScreenConfig(Settings):
    """Optional accuracy screen: drop templates a reference model answers badly with (uses `paft_rl.eval`)."""

    enabled: bool = option(False, help="run the screen")
    model: str | None = option(None, help="reference model (local folder or hub id)")
    dev_size: int = option(16, help="dev questions per template", positive=True)
    min_accuracy: float = option(0.0, help="drop templates scoring below this")
    data: str | None = option(None, help="dev data file; defaults to the registry task's data")
    split: str | None = option(None, help="dev split name; defaults to the task's train split")
    batch_size: int = option(16, help="prompts per generation batch", positive=True)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.enabled and not self.model:
            raise SettingError("model", "is needed when the screen is enabled (a reference model folder or hub id)")


@dataclass
class SplitConfig(Settings):
    """Train / held-out split of the filtered pool."""

    heldout_fraction: float = option(0.2, help="share of generated templates held out",
                                    interval=("(", 0, 1, ")"))
    seed: int = option(0, help="split seed (the split is a hash of seed and template id)")
    include_seeds: bool = option(True, help="put the human-written seed templates in the pool too")
    seeds_to_heldout: bool = option(False, help="seeds all go to held-out (as PAFT evaluated on human-written "
                                                "prompts); the fraction then applies to generated templates only")


@dataclass
class SeedPool(Settings):
    """Seed templates taken from a pool: ``seed_templates: {pool: ..., split: ...}``."""

    pool: str = option(help="pool file (relative to the config file) or built-in pool name")
    split: Literal["train", "heldout", "all"] = option("all", help="which of the pool's templates")


@dataclass
class GenerateConfig(Settings):
    """A whole ``pool generate`` run: the file given to ``paft-rl pool generate --config``.

    ``task`` and ``seed_templates`` hold what the file says until `resolve_references` replaces them with what
    they name (a `TaskSpec`, a list of template texts); `load_config` and `config_from_dict` do both steps.
    """

    task: str | dict | TaskSpec = option(
        help="the task templates are written for: a registry name (e.g. synth_mc) or a mapping with name, "
             "description, fields, required_fields, option_sets, answer_cue")
    generators: list[GeneratorConfig] = option(help="the ensemble: each with name, model, backend...")
    description: str | None = option(None, help="replaces the task's description in the meta-prompts")
    seed_templates: list[str | dict] | str | dict = option(
        help="human-written examples shown in few-shot mode: a list of templates (strings or {text: ...}), a pool "
             "file or built-in pool name, or {pool: ..., split: train|heldout|all}", default_factory=list)
    modes: list[Mode] = option(help="few_shot and/or zero_shot (dual prompting: both)",
                               default_factory=lambda: list(MODES))
    per_model_per_mode: int = option(20, help="candidates kept per generator and mode (PAFT: 20)", positive=True)
    templates_per_request: int = option(5, help="templates asked for in one request", positive=True)
    few_shot_examples: int = option(4, help="seed templates shown per few-shot request", positive=True)
    temperature: float = option(0.9, help="sampling temperature (a generator may override it)",
                                 interval=("[", 0, None, ")"))
    top_p: float = option(1.0, help="nucleus sampling share, in (0, 1]", interval=("(", 0, 1, "]"))
    seed: int = option(0, help="picks the few-shot examples of each request")
    cache: str | None = option(None, help="response cache file (relative to the config file); unset: "
                                          "<out stem>.cache.jsonl; an empty string disables it")
    metaprompts: dict[str, str] = option(
        help="your own meta-prompt files by name (system, few_shot, zero_shot), replacing the shipped ones; "
             "$description, $placeholder_rules, $cue_rule, $count, $first_field and (few-shot) $examples are "
             "filled in", default_factory=dict)
    requests: RequestConfig = option(help="network behaviour of the HTTP generators", default_factory=RequestConfig)
    filters: FilterConfig = option(help="filters applied to parsed candidates", default_factory=FilterConfig)
    screen: ScreenConfig = option(help="optional accuracy screen with a reference model", default_factory=ScreenConfig)
    split: SplitConfig = option(help="train / held-out split of the filtered pool", default_factory=SplitConfig)
    registry_task: str | None = field(default=None, init=False, metadata={
        "help": "the registry name `task` named, if it named one (set by resolve_references; the screen needs it)"})

    def __post_init__(self) -> None:
        if isinstance(self.modes, str):  # `modes: zero_shot` means the one mode
            self.modes = [self.modes]
        super().__post_init__()
        if not self.modes:
            raise SettingError("modes", f"must name at least one of {', '.join(MODES)}")
        if not self.generators:
            raise SettingError("generators", "must list at least one generator (name, model, backend)")
        names = [g.name for g in self.generators]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise SettingError("generators", f"must have unique names; repeated: {', '.join(repeated)}")

    @property
    def requests_per_mode(self) -> int:
        return -(-self.per_model_per_mode // self.templates_per_request)

    def temperature_of(self, generator: GeneratorConfig) -> float:
        return self.temperature if generator.temperature is None else generator.temperature


# ---------------------------------------------------------------------------- loading
def load_config(path: str | Path) -> GenerateConfig:
    """Read and check a generate config file; relative file paths in it are relative to the file."""
    path = Path(path)
    return resolve_references(read_settings_file(GenerateConfig, path, "config file"), path.parent, path.name)


def config_from_dict(data: dict[str, Any], base_dir: str | Path = ".", where: str = "config") -> GenerateConfig:
    """Build a `GenerateConfig` from a plain mapping (the parsed YAML) and check it."""
    return resolve_references(settings_from_mapping(GenerateConfig, data, where), Path(base_dir), where)


def resolve_references(config: GenerateConfig, base_dir: Path, where: str) -> GenerateConfig:
    """Replace what the file names (registry task, seed pool, meta-prompt files, cache) with what it names; check."""
    raw_task = config.task
    config.task = resolve_task(raw_task, config.description, where)
    if isinstance(raw_task, str):
        config.registry_task = raw_task
    config.seed_templates = _seed_templates(config.seed_templates, base_dir, where)
    if config.cache:  # like every file in the config, relative to the config file
        config.cache = str(base_dir / Path(config.cache).expanduser())
    config.metaprompts = _metaprompt_files(config.metaprompts, base_dir, where)
    check_config(config, where)
    return config


def resolve_task(raw: str | dict | TaskSpec, description: str | None, where: str) -> TaskSpec:
    """A `TaskSpec` from a registry name (looked up in `paft_rl.tasks`) or an inline mapping."""
    if isinstance(raw, TaskSpec):
        return raw
    if isinstance(raw, str):
        from ..tasks import get_task

        task = get_task(raw)
        return TaskSpec(name=task.name, description=description or task.description, fields=tuple(task.fields),
                        required_fields=tuple(task.required_fields),
                        option_sets=tuple(tuple(s) for s in task.option_sets), answer_cue=task.answer_cue,
                        cloze=task.cloze)
    if description is not None:
        raw = {"description": description, **raw}
    return settings_from_mapping(TaskSpec, raw, f"{where}.task")


def _seed_templates(raw: list | str | dict, base_dir: Path, where: str) -> list[str]:
    """Seed templates inline (strings or ``{text: ...}``), or from a pool: a file path or built-in pool name,
    optionally as ``{pool: ..., split: train|heldout|all}``."""
    if isinstance(raw, dict):
        seeds = settings_from_mapping(SeedPool, raw, f"{where}.seed_templates")
        return _seed_pool_texts(seeds.pool, seeds.split, base_dir)
    if isinstance(raw, str):
        return _seed_pool_texts(raw, "all", base_dir)
    texts = [item.get("text") if isinstance(item, dict) else item for item in raw]
    bad = [i for i, text in enumerate(texts) if not isinstance(text, str) or not text.strip()]
    if bad:
        raise UserError(f"{where}.seed_templates[{bad[0]}] must be a non-empty string (or a mapping with 'text')")
    return texts


def _seed_pool_texts(spec: str, split: str, base_dir: Path) -> list[str]:
    from prompt_pool.io import load_pool

    path = Path(spec).expanduser()
    path = path if path.is_absolute() else base_dir / path
    pool = load_pool(path if path.exists() else spec)
    return [t.text for t in pool.subset(split).templates]


def _metaprompt_files(raw: dict[str, str], base_dir: Path, where: str) -> dict[str, str]:
    """Resolve user meta-prompt files (relative to the config file) and check that they exist."""
    resolved = {}
    for name, file in raw.items():
        if name not in METAPROMPT_NAMES:
            raise unknown_key_error(name, METAPROMPT_NAMES, f"{where}.metaprompts")
        path = Path(file).expanduser()
        path = path if path.is_absolute() else base_dir / path
        if not path.is_file():
            raise UserError(f"{where}.metaprompts.{name}: file {str(path)!r} does not exist")
        resolved[name] = str(path)
    return resolved


def check_config(config: GenerateConfig, where: str = "config") -> None:
    """What the values alone cannot show (the environment, the seed templates' contents), raised before any work."""
    if "few_shot" in config.modes and not config.seed_templates:
        raise UserError(f"{where}: few_shot mode needs seed_templates (human-written examples); add some or use "
                        "modes: [zero_shot]")
    for i, g in enumerate(config.generators):
        if g.api_key_env and not os.environ.get(g.api_key_env):
            raise UserError(f"{where}.generators[{i}]: generator {g.name!r} reads its API key from ${g.api_key_env}, "
                            f"which is not set; export {g.api_key_env}=... or remove api_key_env")
    _check_seeds(config, where)
    if config.screen.enabled and config.registry_task is None:  # the screen evaluates: it needs data and a reward
        raise UserError(f"{where}: screen needs a registry task (its data and reward); name one in 'task' "
                        "or turn the screen off")


def _check_seeds(config: GenerateConfig, where: str) -> None:
    """Seed templates are shown to the models as examples of valid templates: they must be valid."""
    from prompt_pool.pool import PromptPool, Template

    pool = PromptPool([Template(f"seed-{i}", text) for i, text in enumerate(config.seed_templates)],
                      name="seed_templates")
    problems = pool.problems(config.task) if config.seed_templates else []
    if problems:
        raise UserError(f"{where}: seed_templates are not valid for task {config.task.name!r}: {problems[0]}"
                        + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))


__all__ = ["BACKENDS", "MODES", "FilterConfig", "GenerateConfig", "GeneratorConfig", "RequestConfig",
           "ScreenConfig", "SeedPool", "SplitConfig", "TaskSpec", "check_config", "config_from_dict", "load_config",
           "resolve_references", "resolve_task"]
