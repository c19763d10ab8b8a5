"""The pipeline stages, one module each; pipeline.py runs one row through check, base, build, smoke, push."""
