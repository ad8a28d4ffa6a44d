"""Workflows: multi-stage runs (pipeline, demo, sequence, select) built from the library calls, below the CLI."""
