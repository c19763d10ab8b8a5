"""docs/benchmarks.md is rendered from bench/results.json: targets, ratios, units, failed measures (fast)."""

from __future__ import annotations

from bench.report import fmt, line, met, render, target

SAMPLE = {
    "schema": 1,
    "runs": {"r1": {"mode": "full", "started_at": "2026-01-01T00:00:00+00:00", "finished_at": "2026-01-01T00:30:00+00:00",
                    "machine": {"os": "Debian GNU/Linux 12 (bookworm)", "nproc": 2, "cpu": "AMD EPYC",
                                "mem_total_bytes": 25_000_000_000, "loadavg": [1.0, 1.0, 1.0]},
                    "versions": {"uv": "uv 0.13.9"}}},
    "metrics": {
        "peer": {"title": "Peer", "run": "r1", "measured_at": "2026-01-01T00:20:00+00:00", "method": "side by side.",
                 "lines": [line("image size", 7.5e9, "B", ref=9.1e9, ref_what="peer image", ratio=7.5 / 9.1,
                                ratio_what="ours / peer")]},
        "fail_fast": {"title": "Fail-fast", "run": "r1", "measured_at": "2026-01-01T00:00:01+00:00",
                      "method": "validate vs docker build.", "notes": ["samples (s): [0.9, 1.0]"],
                      "lines": [line("time to reject", 0.9, "s", ours_note="median of 5", ref=41.0,
                                     ref_what="docker build", ratio=41.0 / 0.9, ratio_what="docker / validate",
                                     target=target("ratio", ">=", 30))]},
        "noop_build": {"title": "No-op", "run": "r1", "measured_at": "2026-01-01T00:01:00+00:00",
                       "lines": [line("no-op build --all", 3.5, "s", target=target("ours", "<", 3)),
                                 line("rows built", 0.0, "rows", target=target("ours", "==", 0))]},
        "incremental": {"title": "incremental", "error": "RuntimeError: cold build failed"},
    },
}


def test_targets_are_judged_on_the_value_they_name():
    assert met(line("a", 0.9, "s", ratio=46.0, target=target("ratio", ">=", 30))) is True
    assert met(line("a", 3.5, "s", target=target("ours", "<", 3))) is False
    assert met(line("a", 0.0, "rows", target=target("ours", "==", 0))) is True
    assert met(line("a", 1.0, "s")) is None
    assert met(line("a", None, "B", target=target("ratio", "<=", 0.35))) is None


def test_units():
    assert fmt(7_531_758_072, "B") == "7.53 GB"
    assert fmt(12_300_000, "B") == "12.30 MB"
    assert fmt(0.587, "s") == "0.59 s" and fmt(187.4, "s") == "187 s"
    assert fmt(46.27, "x") == "46×" and fmt(1.0253, "x") == "1.03×" and fmt(0.0123, "x") == "0.012×"
    assert fmt(None, "s") == "–"


def test_table_in_metric_order_with_targets_and_verdicts():
    text = render(SAMPLE)
    rows = [r for r in text.splitlines() if r.startswith("| ")]
    assert rows[0] == "| # | metric | ours | peer / floor | ratio | target | met? |"
    body = rows[1:]
    assert body[0] == ("| 1 | time to reject | 0.90 s (median of 5) | 41.0 s: docker build | 46× (docker / validate) "
                       "| ≥ 30× | yes |")
    assert body[1] == "| 3 | no-op build --all | 3.50 s | – | – | < 3 s | **no** |"
    assert body[2] == "|  | rows built | 0 rows | – | – | = 0 rows | yes |"
    assert body[3].startswith("| 4 | incremental | not measured: RuntimeError: cold build failed")
    assert body[4] == "| 7 | image size | 7.50 GB | 9.10 GB: peer image | 0.82× (ours / peer) | – | – |"


def test_how_sections_and_runs():
    text = render(SAMPLE)
    assert "### 1. Fail-fast" in text and "- samples (s): [0.9, 1.0]" in text
    assert "Measured 2026-01-01T00:00:01+00:00 (run r1). validate vs docker build." in text
    assert "- failed: `RuntimeError: cold build failed`" in text
    assert "- `r1` (full, " in text and "2 CPUs (AMD EPYC), 25.00 GB RAM" in text and "uv uv 0.13.9" in text
    assert render(SAMPLE) == text  # deterministic: the committed doc is regenerable


def test_one_off_attempts_are_rendered_after_the_metrics_with_their_date():
    sample = {**SAMPLE, "attempts": {"2026-01-02-a": {"date": "2026-01-02", "title": "uv link mode",
                                                      "text": "Cold builds, side by side.", "notes": ["kept: no"]}}}
    doc = render(sample)
    assert "### 2026-01-02: uv link mode" in doc and "- kept: no" in doc
    assert doc.index("One-off attempts") > doc.index("How each number was measured")
    assert doc.index("One-off attempts") < doc.index("## Runs")
    assert "One-off attempts" not in render(SAMPLE)
