"""Size stage: each row's published image size, total and per layer, kept as a baseline in `sizes/<row-id>.json`
beside the matrix (data, committed), and the check before a push: an image that grew by more than a margin while
its row did not change (same input digest as the baseline's) fails, with the growth by layer, largest first.

A changed row (another input digest), or a row without a baseline, records its new size instead of comparing; a
passing check leaves the baseline as it is, so growth cannot creep in under the margin one rebuild at a time.
Everything but `measure` (docker) and the file reading and writing is pure. The build's size step
(stages/steps.py) runs `check_image` before the push and `record_note` after it.
"""

from __future__ import annotations

import datetime
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from imagematrix.model import paths
from imagematrix.model.errors import InputError, RuntimeFailure
from imagematrix.tools import docker

DEFAULT_MARGIN = 0.05
FORMAT = 1


@dataclass(frozen=True)
class Layer:
    created_by: str  # the instruction that made the layer, as `docker history --no-trunc` says it; '' when imported
    size: int  # bytes, uncompressed
    comment: str = ""

    @property
    def instruction(self) -> str:
        """The instruction without the build arguments a RUN records (`RUN |2 A=1 B=2 /bin/sh -c ...`): a value that
        differs (a registry's name in a reference) leaves it the same layer."""
        found = re.match(r"RUN \|(\d+) (.*)", self.created_by, re.S)
        if not found:
            return self.created_by
        words = found.group(2).split(" ")
        count = int(found.group(1))
        if len(words) <= count or not all("=" in w for w in words[:count]):
            return self.created_by
        return "RUN " + " ".join(words[count:])

    @property
    def label(self) -> str:
        """The instruction, short enough for a line of a message."""
        text = " ".join(self.instruction.split())
        text = text.removesuffix(" # buildkit").replace("RUN /bin/sh -c ", "RUN ", 1)
        if not text:
            return f"(base layer: {self.comment})" if self.comment else "(base layer)"
        return text if len(text) <= 110 else text[:107] + "..."


@dataclass(frozen=True)
class Measurement:
    size: int  # bytes, the whole image uncompressed
    layers: tuple[Layer, ...]  # bottom (base) first; layers of 0 bytes (ENV, LABEL, ...) left out


@dataclass(frozen=True)
class Baseline:
    row: str
    input_digest: str
    size: int
    layers: tuple[Layer, ...]
    recorded: str = ""


@dataclass(frozen=True)
class LayerChange:
    label: str
    old: int  # 0: a layer the baseline did not have
    new: int  # 0: a layer the new image does not have

    @property
    def delta(self) -> int:
        return self.new - self.old


@dataclass(frozen=True)
class Verdict:
    action: str  # "record": store the new size as the baseline | "pass": within the margin | "fail": grew too much
    message: str
    changes: tuple[LayerChange, ...] = field(default=())


# --- the comparison (pure) ---

def from_history(history: list[dict], total: int) -> Measurement:
    """A measurement from `tools.docker.history` (newest layer first) and the image's total size."""
    layers = tuple(Layer(h["created_by"], int(h["size"]), h.get("comment", "")) for h in reversed(history)
                   if int(h["size"]) > 0)
    return Measurement(total, layers)


def _keyed(layers: tuple[Layer, ...]) -> dict[tuple[str, int], Layer]:
    """Layers by (instruction, how many times that same instruction came before): the same instruction twice
    (or two imported layers) still pairs up in order."""
    seen: dict[str, int] = {}
    keyed = {}
    for layer in layers:
        n = seen.get(layer.instruction, 0)
        seen[layer.instruction] = n + 1
        keyed[(layer.instruction, n)] = layer
    return keyed


def layer_changes(old: tuple[Layer, ...], new: tuple[Layer, ...]) -> list[LayerChange]:
    """The layers whose size changed, matched by their instruction; a layer on one side only counts 0 on the
    other. Largest growth first, then the shrunk ones (largest shrink last)."""
    before, after = _keyed(old), _keyed(new)
    changes = []
    for key in list(before) + [k for k in after if k not in before]:
        o, n = before.get(key), after.get(key)
        change = LayerChange((n or o).label, o.size if o else 0, n.size if n else 0)
        if change.delta:
            changes.append(change)
    return sorted(changes, key=lambda c: -c.delta)


def human(n: int, signed: bool = False) -> str:
    """Bytes as docker prints them (decimal units): 7.77 GB, 19.9 MB."""
    sign = ("+" if n > 0 else "-" if n < 0 else "") if signed else ("-" if n < 0 else "")
    n = abs(n)
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{sign}{n / scale:.{2 if unit == 'GB' else 1}f} {unit}"
    return f"{sign}{n} B"


def check(row_id: str, input_digest: str, measured: Measurement, baseline: Baseline | None,
          margin: float = DEFAULT_MARGIN, rerecord: bool = False) -> Verdict:
    """Compare a new image with the row's baseline. Same inputs and more than `margin` (a fraction) bigger: fail.
    No baseline, other inputs, or `rerecord` (the growth is intended): record."""
    size = human(measured.size)
    if baseline is None:
        return Verdict("record", f"no size baseline for {row_id} yet: recording {size}")
    changes = tuple(layer_changes(baseline.layers, measured.layers))
    growth = measured.size - baseline.size
    pct = 100.0 * growth / baseline.size if baseline.size else 0.0
    was = f"{human(baseline.size)} -> {size} ({human(growth, signed=True)}, {pct:+.1f}%)"
    if rerecord:
        return Verdict("record", f"size baseline re-recorded on request: {was}", changes)
    if baseline.input_digest != input_digest:
        return Verdict("record", f"the row changed (input digest {input_digest[:19]}, the baseline was measured for "
                                 f"{baseline.input_digest[:19]}): recording its new size, not comparing: {was}",
                       changes)
    if measured.size <= baseline.size * (1 + margin):
        return Verdict("pass", f"{was}: within the {margin:.0%} margin of the baseline", changes)
    grown = [c for c in changes if c.delta > 0]
    width = max((len(human(c.delta, signed=True)) for c in grown), default=0)
    old_width = max((len(human(c.old)) for c in grown), default=0)
    lines = [f"the image grew by {pct:.1f}% ({human(baseline.size)} -> {size}) with the same inputs: more than the "
             f"{margin:.0%} size margin, nothing pushed",
             f"baseline: sizes/{row_id}.json, measured for input digest {baseline.input_digest[:19]}"
             + (f" on {baseline.recorded}" if baseline.recorded else ""),
             "layers that grew, largest first (growth, before -> after, instruction):" if grown else
             "no layer of the baseline grew (the total did: layers not listed in it?)"]
    lines += [f"  {human(c.delta, signed=True):>{width}}  {human(c.old):>{old_width}} -> {human(c.new)}  {c.label}"
              for c in grown]
    shrunk = [c for c in changes if c.delta < 0]
    if shrunk:
        lines.append(f"  ({len(shrunk)} layer(s) shrank, {human(sum(c.delta for c in shrunk), signed=True)} in all)")
    lines.append(f"fix: find what grew (a base image, the index, a tool that now keeps caches); if the growth is "
                 f"intended, re-record the baseline: `python build.py build --row {row_id} --rebuild --record-size` "
                 f"(or allow more for this run: --size-margin {max(margin * 2, pct / 100 + 0.01):.2f})")
    return Verdict("fail", "\n".join(lines), changes)


# --- the baseline files ---

def baseline_path(root: Path, row_id: str) -> Path:
    """sizes/<row-id>.json beside the matrix file (root: the matrix's folder)."""
    return root / "sizes" / f"{row_id}.json"


def to_json(baseline: Baseline) -> str:
    doc = {"format": FORMAT, "row": baseline.row, "input_digest": baseline.input_digest, "recorded": baseline.recorded,
           "size_bytes": baseline.size,
           "layers": [{"created_by": layer.created_by, "size_bytes": layer.size}
                      | ({"comment": layer.comment} if layer.comment and not layer.created_by else {})
                      for layer in baseline.layers]}
    return json.dumps(doc, indent=2) + "\n"


def from_json(text: str, where: str) -> Baseline:
    try:
        doc = json.loads(text)
        return Baseline(row=doc["row"], input_digest=doc["input_digest"], size=int(doc["size_bytes"]),
                        recorded=doc.get("recorded", ""),
                        layers=tuple(Layer(layer["created_by"], int(layer["size_bytes"]), layer.get("comment", ""))
                                     for layer in doc["layers"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{where}: not a size baseline ({exc.__class__.__name__}: {exc})",
                         fix="delete the file (the next push of the row records it again) or restore it from git") \
            from None


def load(path: Path) -> Baseline | None:
    """The baseline in path; None when there is none."""
    if not path.is_file():
        return None
    return from_json(path.read_text(), str(path))


def write(path: Path, baseline: Baseline) -> None:
    paths.write_atomic(path, to_json(baseline))


# --- docker ---

def measure(image: str) -> Measurement:
    """The local image's total size and its layers (docker)."""
    return from_history(docker.history(image), docker.image_size(image))


def check_image(matrix, row, digest: str, image: str, row_logs: Path, margin: float,
                rerecord: bool, name: str | None = None) -> tuple[Verdict, Baseline]:
    """The size step: the image measured (also into build-logs/<row>/size.json, in the baseline's format) and
    checked against the row's baseline; a RuntimeFailure, naming the layers that grew, when it grew too much.
    name: the image's context name when it is not the row id (a row's linux/arm64 image, `<row-id>@linux-arm64`,
    has its own baseline, sizes/<row-id>@linux-arm64.json)."""
    name = name or row.id
    measured = measure(image)
    stamp = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    now = Baseline(name, digest, measured.size, measured.layers, stamp)
    (row_logs / "size.json").write_text(to_json(now))
    verdict = check(name, digest, measured, load(baseline_path(matrix.root, name)), margin, rerecord)
    if verdict.action == "fail":
        raise RuntimeFailure(f"{verdict.message}\nthe image stays here as {image}")
    return verdict, now


def record_note(matrix, verdict: Verdict, measured: Baseline, write_it: bool) -> str:
    """After the push: the size note of the row's outcome; the new baseline written when the verdict says to record
    and write_it (something was pushed, or --record-size)."""
    if verdict.action != "record":
        return f"size: {verdict.message}"
    if not write_it:
        return f"size: {verdict.message} - not recorded, nothing was pushed (--record-size records it)"
    path = baseline_path(matrix.root, measured.row)
    write(path, measured)
    return f"size: {verdict.message}, in {path}"
