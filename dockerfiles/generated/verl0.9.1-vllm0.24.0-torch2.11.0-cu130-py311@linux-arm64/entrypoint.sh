#!/bin/sh
# Entrypoint of every imagematrix image: a preflight check that only warns (GPU architecture not covered by this
# image's torch, no bf16/FlashAttention-2 below sm_80), then the command. IMAGEMATRIX_PREFLIGHT=0 turns it off.
if [ "${IMAGEMATRIX_PREFLIGHT:-1}" != 0 ]; then
    /opt/venv/bin/python /opt/imagematrix/preflight.py || true
fi
exec "$@"
