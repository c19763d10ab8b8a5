"""Size baseline (issue 17, item 5): a row's image may not grow past the margin while its inputs stay the same; the
growth is listed by layer, largest first. A changed row or one without a baseline records instead."""

from __future__ import annotations

import pytest

from imagematrix.cli import app
from imagematrix.model.errors import InputError
from imagematrix.stages import sizes
from imagematrix.stages.sizes import Baseline, Layer, Measurement

ROW = "verl0.3.0.post1-vllm0.7.2-torch2.5.1-cu124-py311"
DIGEST = "sha256:" + "a" * 64
OTHER = "sha256:" + "b" * 64
GB, MB = 10**9, 10**6

APT = "RUN /bin/sh -c set -eu; apt-get install -y python3.11 # buildkit"
BASE_TXT = "RUN /bin/sh -c uv pip install -r /run/imagematrix-in/base.txt # buildkit"
REQS = "RUN /bin/sh -c uv pip install -r /run/imagematrix-in/requirements.txt # buildkit"
COPY = "COPY row.json /opt/imagematrix/row.json # buildkit"


def layers(*pairs: tuple[str, int]) -> tuple[Layer, ...]:
    return tuple(Layer(text, size, "" if text else "Imported from -") for text, size in pairs)


def image(base=200 * MB, apt=430 * MB, base_txt=4660 * MB, reqs=2460 * MB, copy=2 * 10**3) -> Measurement:
    ls = layers(("", base), (APT, apt), (BASE_TXT, base_txt), (REQS, reqs), (COPY, copy))
    return Measurement(sum(layer.size for layer in ls), ls)


def baseline_of(m: Measurement, digest: str = DIGEST) -> Baseline:
    return Baseline(ROW, digest, m.size, m.layers, "2026-12-02T15:00:00Z")


def test_growth_within_the_margin_passes_and_keeps_the_baseline():
    old = image()
    new = image(reqs=2460 * MB + 300 * MB)  # +300 MB of 7.75 GB: 3.9%
    verdict = sizes.check(ROW, DIGEST, new, baseline_of(old))
    assert verdict.action == "pass"
    assert "within the 5% margin" in verdict.message and "+3.9%" in verdict.message


def test_the_same_image_passes_and_a_smaller_one_too():
    assert sizes.check(ROW, DIGEST, image(), baseline_of(image())).action == "pass"
    assert sizes.check(ROW, DIGEST, image(base_txt=1 * GB), baseline_of(image())).action == "pass"


def test_growth_past_the_margin_fails_listing_the_grown_layers_largest_first():
    old = image()
    new = image(apt=430 * MB + 40 * MB, base_txt=4660 * MB + 500 * MB, copy=1000, base=200 * MB + 1 * MB)
    verdict = sizes.check(ROW, DIGEST, new, baseline_of(old))
    assert verdict.action == "fail"
    text = verdict.message
    first = text.splitlines()[0]
    assert "grew by 7.0%" in first and "7.75 GB -> 8.29 GB" in first and "nothing pushed" in first
    assert "5% size margin" in first
    grown = [line for line in text.splitlines() if line.startswith("  ") and line.lstrip().startswith("+")]
    assert [line.split()[0] for line in grown] == ["+500.0", "+40.0", "+1.0"]
    assert "4.66 GB -> 5.16 GB" in grown[0] and " 430.0 MB -> 470.0 MB" in grown[1] and "RUN uv pip install -r /run/imagematrix-in/base.txt" in grown[0]
    assert grown[0].rstrip().endswith("base.txt")  # '/bin/sh -c' and '# buildkit' are noise in a message
    assert "RUN set -eu; apt-get install -y python3.11" in grown[1]
    assert "(base layer: Imported from -)" in grown[2]
    assert "1 layer(s) shrank" in text  # the COPY, not listed as growth
    assert f"sizes/{ROW}.json" in text and "2026-12-02T15:00:00Z" in text
    assert f"`python build.py build --row {ROW} --rebuild --record-size`" in text
    assert [c.delta for c in verdict.changes] == [500 * MB, 40 * MB, 1 * MB, -1000]


def test_the_margin_is_settable():
    old, new = image(), image(reqs=2460 * MB + 300 * MB)  # +3.9%
    assert sizes.check(ROW, DIGEST, new, baseline_of(old), margin=0.03).action == "fail"
    assert sizes.check(ROW, DIGEST, new, baseline_of(old), margin=0.04).action == "pass"
    assert sizes.check(ROW, DIGEST, image(copy=2001), baseline_of(old), margin=0).action == "fail"


def test_a_changed_row_records_instead_of_failing_and_says_so():
    old, new = image(), image(base_txt=9 * GB)
    verdict = sizes.check(ROW, OTHER, new, baseline_of(old))
    assert verdict.action == "record"
    assert "the row changed" in verdict.message and "recording its new size, not comparing" in verdict.message
    assert OTHER[:19] in verdict.message and DIGEST[:19] in verdict.message


def test_no_baseline_records():
    verdict = sizes.check(ROW, DIGEST, image(), None)
    assert verdict.action == "record" and "no size baseline" in verdict.message and "7.75 GB" in verdict.message


def test_re_recording_on_request_records_even_past_the_margin():
    verdict = sizes.check(ROW, DIGEST, image(base_txt=9 * GB), baseline_of(image()), rerecord=True)
    assert verdict.action == "record" and "re-recorded on request" in verdict.message


def test_layers_pair_up_by_instruction_and_occurrence():
    old = layers(("", 10), (COPY, 5), (COPY, 7), (APT, 3))
    new = layers(("", 10), (COPY, 5), (COPY, 9), (REQS, 4))  # the second COPY grew; APT went, REQS came
    changes = {(c.label, c.old, c.new) for c in sizes.layer_changes(old, new)}
    assert changes == {("COPY row.json /opt/imagematrix/row.json", 7, 9),
                       ("RUN set -eu; apt-get install -y python3.11", 3, 0),
                       ("RUN uv pip install -r /run/imagematrix-in/requirements.txt", 0, 4)}
    assert [c.delta for c in sizes.layer_changes(old, new)] == [4, 2, -3]


def test_build_arguments_recorded_in_a_run_do_not_split_a_layer():
    old = layers(("RUN |1 WHEELS=127.0.0.1:5000/a/w:1 /bin/sh -c pip install /w # buildkit", 10))
    new = layers(("RUN |1 WHEELS=ghcr.io/b/w:1 /bin/sh -c pip install /w # buildkit", 30))
    [change] = sizes.layer_changes(old, new)
    assert (change.label, change.old, change.new) == ("RUN pip install /w", 10, 30)
    odd = Layer("RUN |2 A=1 /bin/sh -c x", 1)  # fewer arguments than it says: left as it is
    assert odd.instruction == odd.created_by


def test_a_long_instruction_is_shortened_in_messages_only():
    long = "RUN /bin/sh -c " + "x" * 300 + " # buildkit"
    layer = Layer(long, 1)
    assert len(layer.label) == 110 and layer.label.endswith("...")
    baseline = Baseline(ROW, DIGEST, 1, (layer,), "t")
    assert sizes.from_json(sizes.to_json(baseline), "x") == baseline


def test_history_to_measurement_drops_empty_layers_and_puts_the_base_first():
    history = [{"created_by": "ENV A=1", "comment": "buildkit.dockerfile.v0", "size": 0},
               {"created_by": REQS, "comment": "buildkit.dockerfile.v0", "size": 50},
               {"created_by": "", "comment": "Imported from -", "size": 100}]
    m = sizes.from_history(history, 150)
    assert m.size == 150 and [layer.created_by for layer in m.layers] == ["", REQS]


def test_baseline_files_round_trip_and_a_broken_one_is_named(tmp_path):
    path = sizes.baseline_path(tmp_path, ROW)
    assert path == tmp_path / "sizes" / f"{ROW}.json" and sizes.load(path) is None
    baseline = baseline_of(image())
    sizes.write(path, baseline)
    assert sizes.load(path) == baseline
    assert '"input_digest": "sha256:aaaa' in path.read_text()
    path.write_text('{"row": "x"}')
    with pytest.raises(InputError, match="not a size baseline"):
        sizes.load(path)


def test_human_sizes():
    assert [sizes.human(n) for n in (0, 999, 1000, 19_900_000, 7_771_648_872)] == \
        ["0 B", "999 B", "1.0 kB", "19.9 MB", "7.77 GB"]
    assert sizes.human(-20 * MB, signed=True) == "-20.0 MB" and sizes.human(5, signed=True) == "+5 B"


def test_build_takes_a_size_margin_as_a_fraction_or_a_percentage_and_a_record_flag():
    parser = app.parser()
    args = parser.parse_args(["build", "--size-margin", "0.1", "--record-size"])
    assert args.size_margin == pytest.approx(0.1) and args.record_size
    assert parser.parse_args(["build", "--size-margin", "7.5%"]).size_margin == pytest.approx(0.075)
    defaults = parser.parse_args(["build"])
    assert defaults.size_margin == sizes.DEFAULT_MARGIN and not defaults.record_size
    for bad in ("-0.1", "lots", "nan"):
        with pytest.raises(SystemExit):
            parser.parse_args(["build", "--size-margin", bad])
