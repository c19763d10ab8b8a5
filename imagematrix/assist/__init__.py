"""Assistants around the pipeline: add-row, pick, doctor, and the two-node Ray cluster test."""
