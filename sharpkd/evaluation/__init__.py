"""Evaluation: metrics with stated settings, classical baselines, the scoring of every method, figures."""
