"""Workflows: multi-step runs built from library calls (training, evaluation, SAPO selection)."""
