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

from .common import log, median, timed
from .report import line, target

CMD = ["python3", "build.py", "outdated", "--since-vllm", "0.7.0", "--json"]


def outdated(ctx: Any) -> dict[str, Any]:
    log(f"outdated: every vLLM release since 0.7.0, 1 + {ctx.runs} runs")
    first = timed(CMD)
    samples, problems, rows, asked = [], [], None, []
    for _ in range(ctx.runs):
        result = timed(CMD)
        samples.append(result.seconds)
        if result.rc not in (0, 1):
            problems.append(f"rc {result.rc}: {result.out[-300:]}")
            continue
        data = json.loads(result.out[result.out.index("{"):result.out.rindex("}") + 1])
        rows = len(data["rows"])
        asked.append(data["resolutions"]["asked"])
    ours = median(samples) if samples else None
    return {
        "title": "outdated, every vLLM release since 0.7.0, warm cache",
        "method": (f"`{' '.join(CMD)}`: reads the index (six pages), then proposes a row (the add-row pairing search, "
                   f"uv's answers from the cache) for each of the {rows} vLLM releases since 0.7.0; wall time of the "
                   f"command, median of {ctx.runs} runs after one warm-up run ({first.seconds:.1f} s)."),
        "notes": [f"samples (s): {[round(s, 2) for s in samples]}; uv runs per timed run: {asked}", *problems],
        "lines": [line(f"outdated, {rows} vLLM releases", ours, "s", ours_note=f"median of {ctx.runs}",
                       target=target("ours", "<", 30))],
        "details": {"seconds": samples, "warmup_seconds": first.seconds, "rows": rows, "uv_runs": asked},
    }


def main() -> int:
    p = argparse.ArgumentParser(prog="python3 -m bench.outdated", description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3)
    result = outdated(SimpleNamespace(runs=p.parse_args().runs))
    print(json.dumps(result, indent=2))
    return 0 if not result["notes"][1:] else 1


if __name__ == "__main__":
    raise SystemExit(main())
