"""Experiments and their commands: detection, evaluation, knockout, patching, comparison, the NIAH sweep and
fine-tuning."""
