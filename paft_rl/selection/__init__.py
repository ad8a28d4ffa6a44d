"""SAPO: choose training templates by their task loss under the current model."""

from .scoring import TemplateScore, pick_template, score_templates, softmax_weights

__all__ = ["TemplateScore", "pick_template", "score_templates", "softmax_weights"]
