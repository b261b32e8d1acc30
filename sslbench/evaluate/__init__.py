"""Evaluation of frozen backbones: features, linear probes, k-NN (analyses come later)."""
