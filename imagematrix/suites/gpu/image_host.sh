#!/usr/bin/env bash
# Image mode on a GPU host without docker, in short resumable steps (each step one call of a few seconds):
#
#   imagematrix/suites/gpu/image_host.sh setup COMMON          # COMMON: pytest<py>/ and vllm-advice.json (kept under $IM)
#   imagematrix/suites/gpu/image_host.sh pending DIR           # parts carried before their manifest exists (kept unchecked)
#   imagematrix/suites/gpu/image_host.sh stash BUNDLE          # a carry.py bundle: its parts (and pending ones) checked and
#                                                       # kept in $IM/store
#   imagematrix/suites/gpu/image_host.sh have OUTFILE          # {"have": [...]}: the parts already here (carry.py --have)
#   imagematrix/suites/gpu/image_host.sh start ROW PY RUN [SITE..] [-- PYTEST_ARGS]
#                                 # detached: unpack ROW's image (once), then run_image.sh inside it as run RUN
#   imagematrix/suites/gpu/image_host.sh early ROW LAYERS DIR  # the lowest LAYERS layers only: torch asked for the GPU
#   imagematrix/suites/gpu/image_host.sh status ROW RUN        # the step it is at, and the log's tail
#   imagematrix/suites/gpu/image_host.sh results ROW RUN DIR   # DIR/ROW.RUN.tgz: the raw results (`gpu-record --mode image`)
#
# $IM (default /root/im) holds store/ (parts by name), manifests/<row>.json, rootfs/<row> (unpacked), repo/ (a copy
# of the files the run needs, since the carried checkout changes between calls), results/<row>.<run>/ and
# state/<row>.<run>.
# SITE: site-packages folders of images unpacked here earlier, relative to $IM/rootfs (e.g.
# ROW1/opt/venv/lib/python3.11/site-packages): files an export thinned against them are copied from there.
set -u
here=$(cd "$(dirname "$0")" && pwd)
package=$(cd "$here/../.." && pwd)  # imagematrix/: this folder is its suites/gpu
repo=$(cd "$package/.." && pwd)     # the checkout (dockerfiles/generated: each row's row.json)
IM=${IM:-/root/im}
mkdir -p "$IM/store" "$IM/manifests" "$IM/rootfs" "$IM/results" "$IM/state" "$IM/repo"
verb=${1:-}
shift || true
case "$verb" in
setup)
    cp -r "$1/." "$IM/common/" 2>/dev/null || { mkdir -p "$IM/common" && cp -r "$1/." "$IM/common/"; }
    rm -rf "$IM/repo" && mkdir -p "$IM/repo/imagematrix/suites"
    cp -r "$here" "$IM/repo/imagematrix/suites/gpu" && cp -r "$package/in_image" "$IM/repo/imagematrix/"
    cp -r "$repo/dockerfiles/generated" "$IM/repo/generated"
    echo "setup: $(ls "$IM/common" | tr '\n' ' ')"
    ;;
pending)
    # parts carried before their export's manifest was written: kept unchecked until `stash` checks them
    mkdir -p "$IM/pending"
    cp "$1"/*.[0-9][0-9][0-9] "$IM/pending/"
    echo "pending: $(ls "$IM/pending" | wc -l) parts"
    ;;
stash)
    bundle=$1
    for m in "$bundle"/manifests/*.json; do
        cp "$m" "$IM/manifests/"
        for from in "$bundle" "$IM/pending"; do
            [ -d "$from" ] || continue
            python3 "$package/in_image/imagefs.py" stash "$from" --manifest "$m" --store "$IM/store" \
                >/dev/null || exit $?
        done
    done
    for f in "$IM"/pending/*; do [ -f "$IM/store/${f##*/}" ] && rm -f "$f"; done
    echo "stash: $(ls "$IM/store" | wc -l) parts here, $(du -sh "$IM/store" | cut -f1)"
    ;;
have)
    python3 -c 'import json, os, sys; print(json.dumps({"have": sorted(os.listdir(sys.argv[1]))}))' "$IM/store" >"$1"
    ;;
start)
    row=$1 py=$2 run=$3
    shift 3
    sites=()
    while [ $# -gt 0 ] && [ "$1" != "--" ]; do sites+=(--site "$IM/rootfs/$1"); shift; done
    [ "${1:-}" = "--" ] && shift
    printf '%s\n' "$@" >"$IM/state/$row.$run.args"
    manifest=$IM/manifests/$row.json
    [ -f "$manifest" ] || { echo "no manifest for $row: stash a bundle first" >&2; exit 2; }
    [ -d "$IM/common/pytest${py//./}" ] || { echo "no pytest for Python $py in $IM/common: run setup" >&2; exit 2; }
    echo "unpacking" >"$IM/state/$row.$run"
    setsid bash -c '
        IM=$1 row=$2 py=$3 manifest=$4 run=$5; shift 5
        mapfile -t args <"$IM/state/$row.$run.args"
        started=$(date +%s)
        if python3 "$IM/repo/imagematrix/in_image/imagefs.py" unpack --manifest "$manifest" --store "$IM/store" \
                --rootfs "$IM/rootfs/$row" "$@" >"$IM/results/$row.unpack.json" 2>>"$IM/results/$row.unpack.log"; then
            echo "suite started (unpacked in $(( $(date +%s) - started )) s)" >"$IM/state/$row.$run"
            started=$(date +%s)
            "$IM/repo/imagematrix/suites/gpu/run_image.sh" "$IM/rootfs" "$IM/rootfs/$row" "$manifest" \
                "$IM/repo/generated/$row/row.json" "$IM/common/pytest${py//./}" "$IM/results/$row.$run" \
                "$IM/common/vllm-advice.json" -- "${args[@]}" >"$IM/results/$row.$run.log" 2>&1
            echo "done $? (suite $(( $(date +%s) - started )) s)" >"$IM/state/$row.$run"
        else
            echo "unpack failed: $(tail -1 "$IM/results/$row.unpack.log")" >"$IM/state/$row.$run"
        fi' _ "$IM" "$row" "$py" "$manifest" "$run" "${sites[@]}" </dev/null >/dev/null 2>&1 &
    echo "started $row ($run)"
    ;;
early)
    # before the whole image is here: its lowest LAYERS layers (the OS, Python and torch) unpacked apart, and
    # torch inside them asked for the GPU: nvidia-smi and a matmul, through the same runner as the suite
    row=$1 layers=$2 dest=$3
    manifest=$IM/manifests/$row.json
    mkdir -p "$dest"
    python3 "$package/in_image/imagefs.py" unpack --manifest "$manifest" --store "$IM/store" \
        --rootfs "$IM/rootfs/$row.early" --layers "$layers" >"$dest/early-unpack.json" 2>"$dest/early-unpack.log" \
        || { tail -3 "$dest/early-unpack.log"; exit 1; }
    python3 "$package/in_image/imagerun.py" --work "$IM/rootfs" --rootfs "$IM/rootfs/$row.early" \
        --manifest "$manifest" --workdir /tmp -- /bin/sh -c 'nvidia-smi -L; /opt/venv/bin/python -c "
import sys, torch
x = torch.randn(4096, 4096, device=\"cuda\")
print(sys.executable, torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0),
      torch.cuda.get_device_capability(0), torch.cuda.get_arch_list())
print(\"matmul exact:\", bool(torch.equal((torch.eye(4096, device=\"cuda\") @ x), x)))
"' >"$dest/early.txt" 2>&1
    echo "early: exit $? ($(cat "$dest/early-unpack.json"))"
    cat "$dest/early.txt"
    ;;
status)
    row=$1 run=$2
    echo "state: $(cat "$IM/state/$row.$run" 2>/dev/null || echo none)"
    tail -2 "$IM/results/$row.unpack.log" 2>/dev/null
    grep -E "PASSED|FAILED|ERROR|SKIPPED" "$IM/results/$row.$run.log" 2>/dev/null | tail -4
    ;;
results)
    row=$1 run=$2 dest=$3
    mkdir -p "$dest"
    cp "$IM/state/$row.$run" "$IM/results/$row.$run/state" 2>/dev/null
    tar czf "$dest/$row.$run.tgz" -C "$IM/results" "$row.$run" "$row.$run.log" "$row.unpack.json" \
        "$row.unpack.log" 2>/dev/null
    ls -la "$dest"
    ;;
*)
    echo "usage: image_host.sh setup|pending|stash|have|start|early|status|results ..." >&2
    exit 2
    ;;
esac
