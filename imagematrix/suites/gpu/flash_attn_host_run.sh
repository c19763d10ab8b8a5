#!/usr/bin/env bash
# On a GPU host without network, in host mode: compile flash-attn with the project's script and, as soon as the
# wheel exists and the row's wheels are installed, run the flash-attn tests and the verl training step against it.
# Everything runs detached (setsid), so short calls can carry wheel parts and poll while the compile runs:
#
#   imagematrix/suites/gpu/flash_attn_host_run.sh start ROW_JSON SDIST ARCHS [WORK]   # e.g. ... flash_attn-2.8.3.tar.gz 90
#   # carry the row's wheels (imagematrix/suites/gpu/wheelhouse.py pack/unpack) into WORK/site, then:
#   touch WORK/site.done
#   imagematrix/suites/gpu/flash_attn_host_run.sh status [WORK]    # compile progress, then the suite's state
#
# WORK (default /root/fa-run) receives: compile.log and out/ (the wheel, record.json) from
# imagematrix/in_image/flash_attn_compile.py, results/ (run_host.sh's OUT: junit.xml, env.json, verl_train.json,
# main_ppo.log ...), results.tgz and state ("compile failed N", "suite started", "done STATUS").
# The compile needs the host's torch, nvcc of torch's CUDA major, and `wheel` (flash-attn's setup.py imports
# wheel.bdist_wheel): put a wheel-0.45.1 wheel beside the sdist and it is installed into WORK/buildreqs.
# Measured on an H200 host (16 cores): 73 units in 1396 s for sm_90; the training step then took 321-365 s.
set -u
here=$(cd "$(dirname "$0")" && pwd)
package=$(cd "$here/../.." && pwd)  # imagematrix/: this folder is its suites/gpu
verb=${1:-}
case "$verb" in
start)
    row_json=$(readlink -f "$2") sdist=$(readlink -f "$3") archs=$4 work=${5:-/root/fa-run}
    mkdir -p "$work/out"
    rm -rf "$work/gpu" && cp -r "$here" "$work/gpu" && cp "$row_json" "$work/row.json"
    cp "$package/in_image/flash_attn_compile.py" "$work/"
    for w in "$(dirname "$sdist")"/wheel-*.whl; do
        [ -f "$w" ] && python3 -m pip install -q --no-index --no-deps --target "$work/buildreqs" "$w"
    done
    cd "$work" || exit 1
    PYTHONPATH="$work/buildreqs" python3 flash_attn_compile.py "$sdist" --archs "$archs" --out "$work/out" --check || exit 3
    PYTHONPATH="$work/buildreqs" setsid nohup bash -c "python3 flash_attn_compile.py '$sdist' --archs '$archs' \
        --out '$work/out' --record '$work/out/record.json' --log '$work/compile.log' > '$work/run.log' 2>&1; \
        echo \$? > '$work/compile.exit'" >/dev/null 2>&1 </dev/null &
    setsid nohup bash "$here/flash_attn_host_run.sh" watch "$work" >"$work/watch.log" 2>&1 </dev/null &
    sleep 5; cat "$work/run.log"
    ;;
watch)
    work=$2
    while true; do
        if [ -f "$work/compile.exit" ] && [ "$(cat "$work/compile.exit")" != 0 ]; then
            echo "compile failed $(cat "$work/compile.exit")" >"$work/state"; exit 1
        fi
        if [ -f "$work/site.done" ] && [ -f "$work/compile.exit" ] && ls "$work"/out/flash_attn-*.whl >/dev/null 2>&1; then
            break
        fi
        sleep 2
    done
    echo "suite started $(date +%s)" >"$work/state"
    python3 -m pip install -q --no-index --no-deps --no-compile --target "$work/site" "$work"/out/flash_attn-*.whl
    cd "$work" || exit 1
    PYTHONPATH="$work/site" PYTHONUNBUFFERED=1 bash "$work/gpu/run_host.sh" "$work/row.json" "$work/results" \
        -k 'flash_attn or trains_two_steps' >"$work/suite.log" 2>&1
    tar czf "$work/results.tgz" -C "$work" results suite.log run.log
    echo "done $(cat "$work/results/exit-status")" >"$work/state"
    ;;
status)
    work=${2:-/root/fa-run}
    tail -n 2 "$work/run.log" 2>/dev/null; cat "$work/state" 2>/dev/null; tail -c 400 "$work/suite.log" 2>/dev/null
    ;;
*)
    sed -n 2,17p "$0"; exit 2
    ;;
esac
