"""The pipeline stages, one module each; steps.py makes the build's steps of them, pipeline.py walks each row through those."""
