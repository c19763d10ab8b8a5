"""imagematrix: version-matrix container images for the verl / vLLM stack.

One module per pipeline stage:

    matrix    matrix.yaml -> validated rows (schema, defaults, bad-input errors)
    tags      pure functions from pins to image tags
    resolve   uv resolution, hash-pinned locks, lock staleness
    patches   source patches as data: selection by version
    patch_apply  stdlib-only applier, runs inside the image build (and in tests)
    flashattn prebuilt flash-attn wheel names
    envdefaults  environment defaults by vLLM version
    render    Jinja2 -> dockerfiles/generated/<row-id>/ (+ drift check)
    cli       the `build.py` command line
"""

__version__ = "0.1.0"
