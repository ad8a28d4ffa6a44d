"""SAPO: choose training templates by their task loss under the current model."""

from .adaptive import AdaptiveWeights, softmax_scores
from .scoring import TemplateScore, pick_template, score_templates

__all__ = ["AdaptiveWeights", "TemplateScore", "pick_template", "score_templates", "softmax_scores"]
