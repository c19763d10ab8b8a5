"""Metric: `build.py outdated` over every vLLM release since 0.7.0, warm cache (issue 16; target: under 30 s).

`outdated(ctx)` has the shape of the other measures (a dict with title, method, notes, lines, details), for a
`--only outdated` entry in bench/__main__.py; on its own, no Docker needed:

    python3 -m bench.outdated [--runs N]

One warm-up run fills the caches (the index's answers, verl's metadata, uv's answers: cold, minutes), then N timed
runs. Each run reads the index's pages again (six pages); uv's answers come from <cache>/outdated/resolutions/.
"""

from __future__ import annotations

import argparse
import json
from types import SimpleNamespace
from typing import Any

from .common import build_py, log, median, repeat
from .report import line, target

ARGS = ["outdated", "--since-vllm", "0.7.0", "--json"]


def _report(out: str) -> dict[str, Any] | None:
    try:
        data = json.loads(out[out.index("{"):out.rindex("}") + 1])
    except ValueError:
        return None
    return data if isinstance(data, dict) and "rows" in data and "resolutions" in data else None


def outdated(ctx: Any) -> dict[str, Any]:
    log(f"outdated: every vLLM release since 0.7.0, 1 + {ctx.runs} runs")
    cmd = build_py(*ARGS)
    runs, first = repeat(cmd, ctx.runs, lambda r: r.rc in (0, 1) and _report(r.out) is not None,
                         "exit code 0 or 1 and the JSON report (rows, resolutions)")
    reports = [_report(r.out) for r in runs]
    samples = [r.seconds for r in runs]
    rows = len(reports[-1]["rows"]) if reports else None
    asked = [report["resolutions"]["asked"] for report in reports]
    ours = median(samples) if samples else None
    return {
        "title": "outdated, every vLLM release since 0.7.0, warm cache",
        "method": (f"`build.py {' '.join(ARGS)}`: reads the index (six pages), then proposes a row (the add-row "
                   f"pairing search, uv's answers from the cache) for each of the {rows} vLLM releases since 0.7.0; "
                   f"wall time of the command, median of {ctx.runs} runs after one warm-up run "
                   f"({first.seconds:.1f} s); each must exit 0 or 1 with the JSON report."),
        "notes": [f"samples (s): {[round(s, 2) for s in samples]}; uv runs per timed run: {asked}"],
        "lines": [line(f"outdated, {rows} vLLM releases", ours, "s", ours_note=f"median of {ctx.runs}",
                       target=target("ours", "<", 30))],
        "details": {"seconds": samples, "warmup_seconds": first.seconds, "rows": rows, "uv_runs": asked},
    }


def main() -> int:
    p = argparse.ArgumentParser(prog="python3 -m bench.outdated", description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3)
    result = outdated(SimpleNamespace(runs=p.parse_args().runs))
    print(json.dumps(result, indent=2))
    return 0  # a failed run raised (bench.common.OutcomeError)


if __name__ == "__main__":
    raise SystemExit(main())
