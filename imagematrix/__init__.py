"""imagematrix: version-matrix container images for the verl / vLLM stack.

Layers, lowest first (ARCHITECTURE.md): model, knowledge, rules, stages, tools (the doors outside), assist,
in_image (copied into images), cli.
"""

__version__ = "0.1.0"
