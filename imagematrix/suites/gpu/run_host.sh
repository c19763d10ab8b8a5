#!/usr/bin/env bash
# Run the GPU smoke suite in host mode (this Python, this GPU, no docker) and keep what a run record is made of:
#
#   imagematrix/suites/gpu/run_host.sh ROW_JSON OUT [pytest args...]
#
# ROW_JSON is the row's dockerfiles/generated/<row-id>/row.json. Install the row's wheels first, e.g. on a host
# without network: `pip install --no-index --no-deps --target SITE WHEELS/*.whl` and `export PYTHONPATH=SITE`
# (they then take precedence over the host's own packages). OUT receives: gpu.csv (nvidia-smi), env.json (the
# versions this Python imports), junit.xml and pytest.log (every test's outcome and duration), verl_train.json and
# main_ppo.log (the training smoke's numbers and log). `python build.py gpu-record OUT` turns them into a record.
set -u
if [ $# -lt 2 ]; then
    echo "usage: $0 ROW_JSON OUT [pytest args...]" >&2
    exit 2
fi
row_json=$1 out=$2
shift 2
if [ ! -f "$row_json" ]; then  # checked first: without it every later step fails, each its own way
    echo "usage: $0 ROW_JSON OUT [pytest args...]" >&2
    echo "$row_json: no such file: pass the row's dockerfiles/generated/<row-id>/row.json" >&2
    exit 2
fi
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader >"$out/gpu.csv" 2>&1
python3 "$here/scripts/env_json.py" "$row_json" >"$out/env.json"
set -o pipefail
IMAGEMATRIX_GPU_RESULTS_DIR="$out" python3 -m pytest "$here" --host --row-json "$row_json" --confcutdir="$here" \
    --rootdir="$here" -p no:cacheprovider -v -rs --junitxml="$out/junit.xml" "$@" 2>&1 | tee "$out/pytest.log"
status=$?
echo "$status" >"$out/exit-status"
exit "$status"
