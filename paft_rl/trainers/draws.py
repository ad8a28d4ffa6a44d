"""Template draws: which pool template each training example gets.

The one invariant: the template of an example is a pure function of ``(seed, row id, position, slot)``, where the
position is the optimizer step divided by K (in GRPO, the optimizer step at which the example's generation cycle
starts) and the slot is which of a mixed rollout group's templates it is. No RNG state, no per-process state: every
rank, and a run resumed from a checkpoint, computes the same template from the same numbers.

A draw is one `TemplateDraw` subclass registered in `DRAWS` under the name ``template_draw`` gives it: `build`
reads its options from a recipe (before any model loads), `template` draws. `TemplateChooser` adds what every draw
shares: K, the rollout group's size and the templates of evaluation during training.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar

from prompt_pool import PromptPool, Template, UserError, draw_index

from ..tasks import Task, load_task_pool, parse_field_aliases
from .data import EVAL_TEMPLATE_COLUMN, example_fields

if TYPE_CHECKING:
    from ..selection.adaptive import AdaptiveWeights


@dataclass(frozen=True)
class TemplateDraw:
    """A rule giving each example its template; subclasses set ``name`` (their ``template_draw`` value) and
    ``summary`` (their line of ``--help``), and define `template`.

    Args:
        pool (`PromptPool`): the validated pool (only its train templates are drawn).
        seed (`int`): seed of the draws.
    """

    pool: PromptPool
    seed: int
    name: ClassVar[str]
    summary: ClassVar[str]
    option: ClassVar[str | None] = None  # the recipe option this draw alone reads (set without it: refused)
    grpo_only: ClassVar[bool] = False  # needs rollout rewards

    @classmethod
    def build(cls, args, task: Task) -> TemplateDraw:
        """This draw over the pool ``args`` names, loaded and validated for ``task`` (fails before any model loads)."""
        pool = load_task_pool(task, args.pool, parse_field_aliases(args.field_aliases),
                              drop_duplicates=args.drop_duplicate_templates)
        return cls(pool, draw_seed(args))

    @classmethod
    def check_options(cls, args) -> None:
        """Raise `UserError` when the recipe lacks what this draw reads (when the config is built)."""

    def template(self, row_id: Any, position: int, slot: int = 0) -> Template:
        """The template of row ``row_id`` at draw position ``position``; ``slot``: which of its rollout group's
        templates (0 for a group of one template)."""
        raise NotImplementedError

    @property
    def candidates(self) -> list[Template]:
        """Every template this draw can give."""
        return self.pool.train

    @property
    def weights(self) -> dict[str, float] | None:
        """The draw weights by template id now (`None`: uniform)."""
        return None

    @property
    def adaptive(self) -> AdaptiveWeights | None:
        return None

    @property
    def per_group(self) -> int:
        """GRPO's m: the distinct templates of one rollout group."""
        return 1

    def following(self, adaptive: AdaptiveWeights) -> TemplateDraw:
        """This draw, by ``adaptive``'s weights (a reference: each draw sees the latest update)."""
        raise UserError(f"template_draw {self.name!r} trains one template: adaptive draw weights need a pool "
                        "draw (template_draw: sapo or sapo_reward)")

    def grouped(self, templates: int) -> TemplateDraw:
        """This draw, spreading each GRPO rollout group over ``templates`` distinct train templates (1: one)."""
        if templates == 1:
            return self
        raise UserError(f"template_draw {self.name!r} trains one template: mixed groups need a pool draw "
                        "(template_draw: uniform, sapo or sapo_reward)")


@dataclass(frozen=True)
class UniformDraw(TemplateDraw):
    """PAFT: a train template drawn uniformly per example (per rollout group in GRPO), or per slot of a mixed
    group without replacement.

    Args:
        groups_of (`int`, defaults to `1`): GRPO's m (see `grouped`).
    """

    groups_of: int = 1
    name: ClassVar[str] = "uniform"
    summary: ClassVar[str] = "PAFT: draw a train template per example / per GRPO group"

    @property
    def per_group(self) -> int:
        return self.groups_of

    def template(self, row_id: Any, position: int, slot: int = 0) -> Template:
        if self.groups_of == 1:
            return self.pool.draw(self.seed, row_id, position, self.weights)
        return self.group(row_id, position)[slot]

    def group(self, row_id: Any, position: int) -> list[Template]:
        """The ``per_group`` distinct train templates of row ``row_id``'s rollout group at ``position``.

        Drawn without replacement, each draw a pure function of ``(seed, row id, position, k)``: by the draw weights
        when there are any (templates of zero weight come last, uniformly), uniformly otherwise. The first is the
        template a group of one template gets.
        """
        candidates = list(self.pool.train)
        weights = self.weights
        masses = [float(weights.get(t.id, 0.0)) for t in candidates] if weights is not None else None
        chosen = []
        for k in range(self.groups_of):
            weighted = masses if masses is not None and sum(masses) > 0 else None
            index = draw_index(self.seed, row_id, position if k == 0 else f"{position}/{k}", len(candidates), weighted)
            chosen.append(candidates.pop(index))
            if masses is not None:
                masses.pop(index)
        return chosen

    def following(self, adaptive: AdaptiveWeights) -> TemplateDraw:
        if [t.id for t in adaptive.pool.train] != [t.id for t in self.pool.train]:
            raise UserError("the adaptive draw weights are over other train templates than the chooser's: build "
                            "both from the same pool")
        return DRAWS[adaptive.mode](self.pool, self.seed, self.groups_of, adaptive)

    def grouped(self, templates: int) -> TemplateDraw:
        if templates > len(self.pool.train):
            raise UserError(f"templates_per_group {templates} exceeds the {len(self.pool.train)} train templates of "
                            f"{self.pool.name}: lower templates_per_group to at most {len(self.pool.train)}, or use "
                            "a pool with more train templates")
        return replace(self, groups_of=templates)


@dataclass(frozen=True)
class LossWeightedDraw(UniformDraw):
    """SAPO during training: draws weighted by each template's loss on a probe set, rescored every ``sapo_every``
    steps (uniform until the trainer's first update).

    Args:
        adaptive_weights (`AdaptiveWeights`, *optional*): the weights, which the trainer builds and updates.
    """

    adaptive_weights: AdaptiveWeights | None = None
    name: ClassVar[str] = "sapo"
    summary: ClassVar[str] = "draw weights from each template's current task loss, SAPO"

    @property
    def adaptive(self) -> AdaptiveWeights | None:
        return self.adaptive_weights

    @property
    def weights(self) -> dict[str, float] | None:
        return self.adaptive_weights.weights if self.adaptive_weights is not None else None


@dataclass(frozen=True)
class RewardWeightedDraw(LossWeightedDraw):
    """GRPO: draws weighted by each template's running mean reward."""

    name: ClassVar[str] = "sapo_reward"
    summary: ClassVar[str] = "GRPO: from each template's running mean reward"
    grpo_only: ClassVar[bool] = True


@dataclass(frozen=True)
class FixedDraw(TemplateDraw):
    """One user-written template (``fixed_template``) for every example: the single-prompt baseline.

    Args:
        fixed (`Template`): the template of every example.
    """

    fixed: Template
    name: ClassVar[str] = "fixed"
    summary: ClassVar[str] = "one user-written template, see fixed_template"
    option: ClassVar[str | None] = "fixed_template"

    @classmethod
    def build(cls, args, task: Task) -> TemplateDraw:
        pool = PromptPool([Template("fixed", args.fixed_template, "train", "user")], name="fixed_template")
        pool = pool.with_aliases(parse_field_aliases(args.field_aliases)).validate(task)
        return cls(pool, draw_seed(args), pool.templates[0])

    @classmethod
    def check_options(cls, args) -> None:
        if not args.fixed_template:
            raise UserError("template_draw 'fixed' needs the template text: set fixed_template")

    def template(self, row_id: Any, position: int, slot: int = 0) -> Template:
        return self.fixed

    @property
    def candidates(self) -> list[Template]:
        return [self.fixed]


@dataclass(frozen=True)
class TopDraw(FixedDraw):
    """One pool template (``template_id``, e.g. the one `paft-rl select` picked) for every example."""

    name: ClassVar[str] = "top"
    summary: ClassVar[str] = "one pool template, see template_id"
    option: ClassVar[str | None] = "template_id"

    @classmethod
    def build(cls, args, task: Task) -> TemplateDraw:
        pool = UniformDraw.build(args, task).pool
        ids = [t.id for t in pool.train]
        if args.template_id not in ids:
            raise UserError(f"template_id {args.template_id!r} is not a train template of {pool.name}; choose one "
                            f"of {', '.join(ids[:8])}{' ...' if len(ids) > 8 else ''}")
        return cls(pool, draw_seed(args), pool.get(args.template_id))

    @classmethod
    def check_options(cls, args) -> None:
        if not args.template_id:
            raise UserError("template_draw 'top' needs a pool template id: set template_id")


# ``template_draw`` -> its draw. A new draw: a `TemplateDraw` subclass, and its entry here.
DRAWS: dict[str, type[TemplateDraw]] = {
    draw.name: draw for draw in (UniformDraw, FixedDraw, TopDraw, LossWeightedDraw, RewardWeightedDraw)}


def draw_seed(args) -> int:
    """The seed of the template draws: ``template_seed``, or the run's ``seed``."""
    return int(args.seed if args.template_seed is None else args.template_seed)


@dataclass
class TemplateChooser:
    """Chooses the template of each example: a draw, PAFT's K and the templates of evaluation during training.

    Args:
        draw (`TemplateDraw`): the draw (see `DRAWS`).
        every (`int`, defaults to `1`): PAFT's K, in optimizer steps.
        eval_pool (`PromptPool`, *optional*): the templates of evaluation during training; defaults to the
            pool's held-out templates.
    """

    draw: TemplateDraw
    every: int = 1
    eval_pool: PromptPool | None = None

    @property
    def pool(self) -> PromptPool:
        return self.draw.pool

    @property
    def weights(self) -> dict[str, float] | None:
        """The draw weights by template id now: the adaptive weights' current ones, or `None` (uniform)."""
        return self.draw.weights

    @property
    def adaptive(self) -> AdaptiveWeights | None:
        return self.draw.adaptive

    @property
    def per_group(self) -> int:
        return self.draw.per_group

    @property
    def candidates(self) -> list[Template]:
        return self.draw.candidates

    def position(self, step: int) -> int:
        """The draw position of optimizer step ``step``: the block of K steps it falls in."""
        return int(step) // self.every

    def following(self, adaptive: AdaptiveWeights) -> TemplateChooser:
        """This chooser, drawing by ``adaptive``'s weights (a reference: each draw sees the latest update)."""
        return replace(self, draw=self.draw.following(adaptive))

    def grouped(self, templates: int) -> TemplateChooser:
        """This chooser, spreading each GRPO rollout group over ``templates`` distinct train templates (1: one)."""
        return replace(self, draw=self.draw.grouped(templates))

    def choose(self, row_id: Any, step: int, slot: int = 0) -> Template:
        """The template of row ``row_id`` at optimizer step ``step``; ``slot``: which of its group's
        `group_templates` (0 to ``per_group - 1``; a group with one template has only slot 0)."""
        return self.draw.template(row_id, self.position(step), slot)

    def group_templates(self, row_id: Any, step: int) -> list[Template]:
        """The ``per_group`` templates of row ``row_id``'s rollout group at step ``step``, in slot order."""
        return [self.choose(row_id, step, slot) for slot in range(self.per_group)]

    def render(self, template: Template, fields: Mapping[str, object]) -> str:
        return self.pool.render(template, fields)

    @property
    def evaluated(self) -> PromptPool:
        """The pool of evaluation during training (``eval_pool``, or the held-out templates of ``pool``)."""
        pool = self.eval_pool if self.eval_pool is not None else self.pool.subset("heldout")
        if not pool.templates:
            raise UserError(f"{self.pool.name} has no held-out templates to evaluate on: set eval_templates to train, "
                            f"all or a pool file")
        return pool

    def eval_prompt_text(self, row: Mapping[str, Any]) -> tuple[Template, str]:
        """The template of an eval row (its ``paft_eval_template`` column) and the text it renders."""
        pool = self.evaluated
        template = pool.get(row[EVAL_TEMPLATE_COLUMN])
        return template, pool.render(template, example_fields(row))


def build_chooser(args, task: Task) -> TemplateChooser:
    """The chooser a recipe asks for, its pool loaded and validated (fails before any model is loaded)."""
    return TemplateChooser(DRAWS[args.template_draw].build(args, task), args.template_every)
