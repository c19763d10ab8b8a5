"""Queries over the facts in knowledge/ (GPUs, flash-attn wheels, env defaults, patches) and verl's metadata."""
