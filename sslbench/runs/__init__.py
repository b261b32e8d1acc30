"""Run orchestration: identity, environment capture, lifecycle (and, later, scheduling)."""
