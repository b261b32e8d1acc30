"""Pretraining: the loop, its optimisers and schedule, the online probe, torchrun support and
the checks run before anything is written (preflight)."""
