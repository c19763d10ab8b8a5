"""Bundle `build.py export` parts into carry-sized folders for a GPU host, leaving out what the host already holds.

    python imagematrix/suites/gpu/carry.py plan EXPORT_DIR [EXPORT_DIR...] --out .carry/bundles [--have HAVE.json]
        [--max-mib 48]

Each bundle folder (b001, b002, ...) holds parts (hard links to the export's files) of at most --max-mib together,
plus every export's manifest as manifests/<row>.json, so that any one call can stash what it carried:

    for m in B/manifests/*.json; do python3 imagematrix/in_image/imagefs.py stash B --manifest $m --store S; done

HAVE.json is what the host said it holds ({"missing": [...]} from `imagefs.py missing`, or {"have": [...]}): only
parts the host lacks are bundled, so a carry resumes where the last one stopped. Parts go lowest layer first, row
by row in the order given, so the first row can be unpacked while the second is still being carried.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys


def plan(exports: list[str], out: str, have: set[str] | None, missing: set[str] | None, max_bytes: int) -> list[str]:
    parts: list[tuple[str, str, int]] = []
    manifests = {}
    seen = set()
    for folder in exports:
        with open(os.path.join(folder, "manifest.json")) as fh:
            manifest = json.load(fh)
        manifests[manifest["row"]] = os.path.join(folder, "manifest.json")
        for layer in manifest["layers"]:
            for part in layer["parts"]:
                name = part["name"]
                if name in seen or (have is not None and name in have) or (missing is not None and name not in missing):
                    continue
                seen.add(name)
                parts.append((name, os.path.join(folder, name), part["size"]))
    shutil.rmtree(out, ignore_errors=True)
    bundles: list[list[tuple[str, str, int]]] = []
    for part in parts:
        if part[2] > max_bytes:
            raise SystemExit(f"carry: part {part[0]} is {part[2]} bytes, over --max-mib; export with a smaller "
                             "--part-mib")
        if not bundles or sum(p[2] for p in bundles[-1]) + part[2] > max_bytes:
            bundles.append([])
        bundles[-1].append(part)
    names = []
    for i, bundle in enumerate(bundles, 1):
        folder = os.path.join(out, f"b{i:03d}")
        os.makedirs(os.path.join(folder, "manifests"))
        for row, path in manifests.items():
            shutil.copyfile(path, os.path.join(folder, "manifests", f"{row}.json"))
        for name, path, _ in bundle:
            os.link(path, os.path.join(folder, name))
        names.append(folder)
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="carry.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("plan")
    p.add_argument("exports", nargs="+")
    p.add_argument("--out", required=True)
    p.add_argument("--have", default=None, help="the host's answer: {\"missing\": [...]} or {\"have\": [...]}")
    p.add_argument("--max-mib", type=int, default=48)
    args = parser.parse_args(argv)
    have = missing = None
    if args.have:
        with open(args.have) as fh:
            answer = json.load(fh)
        have = set(answer["have"]) if "have" in answer else None
        missing = set(answer["missing"]) if "missing" in answer else None
    bundles = plan(args.exports, args.out, have, missing, args.max_mib << 20)
    total = sum(os.path.getsize(os.path.join(b, n)) for b in bundles for n in os.listdir(b) if n != "manifests")
    print(json.dumps({"bundles": len(bundles), "bytes": total, "first": bundles[:1], "last": bundles[-1:]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
