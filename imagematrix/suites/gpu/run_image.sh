#!/usr/bin/env bash
# Run the GPU smoke suite INSIDE an unpacked image on this host (image mode, no docker): the image's own Python,
# libc, compiler and CUDA libraries, the host's GPU and driver, as the NVIDIA container runtime would give them
# (imagematrix/in_image/imagerun.py), and keep what a run record is made of:
#
#   imagematrix/suites/gpu/run_image.sh WORK ROOTFS MANIFEST ROW_JSON PYTEST_DIR OUT [ADVICE_JSON] [-- pytest args...]
#
# ROOTFS is the image unpacked by imagematrix/in_image/imagefs.py from `build.py export`'s parts (inside WORK);
# MANIFEST is that export's manifest.json (the image's Env, WorkingDir, User, digest). PYTEST_DIR holds pytest for
# the image's Python, pure Python only (imagematrix/stages/smoke_gpu.pytest_dir), put at the END of sys.path as the
# docker route does. OUT receives what run_host.sh writes (gpu.csv, env.json with an isolation check, junit.xml,
# pytest.log, verl_train.json, main_ppo.log, exit-status) plus image.json (the manifest's digest and labels);
# `python build.py gpu-record OUT --row ID --mode image` turns them into a record.
# IMAGEMATRIX_IMAGE_ENV="K=V ..." sets variables inside the image too: a fix tried on the GPU before images carry it
# (a record of such a run says so in its note).
set -u
usage="usage: $0 WORK ROOTFS MANIFEST ROW_JSON PYTEST_DIR OUT [ADVICE_JSON] [-- pytest args...]"
if [ $# -lt 6 ]; then
    echo "$usage" >&2
    exit 2
fi
work=$1 rootfs=$2 manifest=$3 row_json=$4 pytest_dir=$5 out=$6
shift 6
for file in "$manifest" "$row_json"; do  # checked first: without them every later step fails, each its own way
    if [ ! -f "$file" ]; then
        echo "$usage" >&2
        echo "$file: no such file" >&2
        exit 2
    fi
done
advice=
if [ $# -gt 0 ] && [ "$1" != "--" ]; then advice=$1; shift; fi
[ "${1:-}" = "--" ] && shift
here=$(cd "$(dirname "$0")" && pwd)
runner="$here/../../in_image/imagerun.py"  # imagematrix/in_image: this folder is imagematrix/suites/gpu
mkdir -p "$out"
out=$(readlink -f "$out")
python3 - "$manifest" >"$out/image.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
print(json.dumps({k: m.get(k) for k in ("image", "manifest_digest", "config_digest", "labels", "row")}, indent=1))
PY
extra_env=()  # IMAGEMATRIX_IMAGE_ENV="K=V ...": set inside the image as well (a fix tried before the image has it)
for kv in ${IMAGEMATRIX_IMAGE_ENV:-}; do extra_env+=(--env "$kv"); done
inside() {
    python3 "$runner" --work "$work" --rootfs "$rootfs" --manifest "$manifest" --workdir /tmp \
        --bind "$here:/imagematrix/gpu:ro" --bind "$pytest_dir:/imagematrix/pytest:ro" \
        --bind "$row_json:/imagematrix/row.json:ro" --bind "$out:/imagematrix/out" \
        ${advice:+--bind "$advice:/imagematrix/vllm-advice.json:ro"} \
        --env PYTHONDONTWRITEBYTECODE=1 --env HF_HUB_OFFLINE=1 --env TRANSFORMERS_OFFLINE=1 \
        --env IMAGEMATRIX_GPU_RESULTS_DIR=/imagematrix/out "${extra_env[@]}" -- "$@"
}
inside nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader >"$out/gpu.csv" 2>&1
host_prefix=$(python3 -c 'import sys; print(sys.prefix)')
inside /opt/venv/bin/python /imagematrix/gpu/scripts/env_json.py /imagematrix/row.json "$host_prefix" >"$out/env.json"
if ! python3 -c 'import json,sys; i=json.load(open(sys.argv[1]))["isolation"]; sys.exit(i["host_prefix_visible"] or bool(i["paths_under_host_prefix"]))' "$out/env.json"; then
    echo "the host's Python ($host_prefix) is visible inside the image: not an image-mode run" >&2
    echo 125 >"$out/exit-status"
    exit 125
fi
bootstrap="import sys; sys.path.append('/imagematrix/pytest'); import pytest; sys.exit(pytest.main(sys.argv[1:]))"
set -o pipefail
inside /opt/venv/bin/python -c "$bootstrap" /imagematrix/gpu -p no:cacheprovider --rootdir /imagematrix/gpu \
    --confcutdir /imagematrix/gpu -v -rs --in-image --row-json /imagematrix/row.json \
    ${advice:+--vllm-advice /imagematrix/vllm-advice.json} --junitxml /imagematrix/out/junit.xml "$@" 2>&1 \
    | tee "$out/pytest.log"
status=$?
echo "$status" >"$out/exit-status"
exit "$status"
