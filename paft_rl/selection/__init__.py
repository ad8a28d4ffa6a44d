"""SAPO: choose training templates by their task loss under the current model."""

from .adaptive import softmax_scores
from .scoring import TemplateScore, pick_template, score_templates

__all__ = ["TemplateScore", "pick_template", "score_templates", "softmax_scores"]
