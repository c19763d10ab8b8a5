"""Issue 26, item 13: `outdated` offered "vLLM 0.33.0: newest verl that resolves 0.4.1 (override)", a verl of mid-2025
with a vLLM of late 2026 and transformers 5, because it resolved; and it cut its notes mid-word ("depends on tra…").

A proposal, and each nearest pairing a refusal names, now passes the same rules as a matrix row (knowledge/rules.yaml
over the row add-row would write, with uv's resolution and the facts the rules read taken from the index snapshot)
before it is offered; it says what was checked beyond resolution, or which rule refuses it. Notes are shortened at
word boundaries, never inside a word, and --json keeps every text whole.

Over the recorded index and uv answers of test_outdated.py; nothing here reads the index.
"""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console
from rich.text import Text

from imagematrix.assist import addrow, index_snapshot, outdated
from imagematrix.cli import outdated as cli_outdated
from imagematrix.knowledge import requires
from imagematrix.model import matrix as matrix_mod
from tests.unit.assist.test_outdated import MATRIX, NOW, STACKS, FakeResolver, no_index, rel, snapshot  # noqa: F401 (no_index: the autouse guard against index reads)

# verl 0.4.1 as PyPI has it (Requires-Dist trimmed to what the rules read): no transformers bound, tensordict<=0.6.2
VERL_041 = ["ray[default]>=2.41.0", "tensordict<=0.6.2", "transformers", 'tensordict<=0.6.2; extra == "vllm"',
            'vllm<=0.8.5; extra == "vllm"']




@pytest.fixture
def rows(write_matrix):
    return matrix_mod.load(write_matrix(MATRIX)).rows


def with_verl_041() -> tuple[index_snapshot.Snapshot, FakeResolver]:
    """The index of test_outdated.py plus verl 0.4.1; vLLM 0.33.0 resolves with it alone (without its [vllm] extra,
    which declares vllm<=0.8.5), as on PyPI, and uv picks transformers 5 for it (verl declares no bound)."""
    shot = snapshot()
    shot.releases["verl"].append(rel("0.4.1", "2025-06-24T00:00:00Z", rp=">=3.8"))
    shot.vllm_ranges["0.4.1"] = "<=0.8.5"
    shot.requires_dist["verl==0.4.1"] = VERL_041
    stacks = {k: v for k, v in STACKS.items() if k != ("0.8.0", "0.33.0", False)}
    stacks[("0.4.1", "0.33.0", False)] = ("2.15.0", "13.0.96", "0.6.2", "5.20.2")
    return shot, FakeResolver(stacks)


def report(rows, shot=None, resolver=None, **kw) -> outdated.Report:
    return outdated.build_report(rows, shot or snapshot(), resolver or FakeResolver(), python=kw.pop("python", "3.11"),
                                 now=NOW, jobs=1, **kw)


def plain(note: Text) -> str:
    return note.plain


def table_text(r: outdated.Report, width: int = 250) -> str:
    console = Console(file=io.StringIO(), width=width, record=True)
    console.print(cli_outdated.rows_table(r))
    return console.export_text()


# --- a pairing that breaks a rule is not offered, and says which rule -----------------------------------------------


def test_a_nearest_override_pairing_that_breaks_a_rule_is_not_offered_and_names_the_rule(rows):
    shot, resolver = with_verl_041()
    r = report(rows, shot, resolver)
    o = next(o for o in r.outcomes if o.version == "0.33.0")
    found = o.nearest["verl"]
    assert (found["verl"], found["vllm"], found["override"]) == ("0.4.1", "0.33.0", True)  # it resolves ...
    assert found["offered"] is False  # ... and is not offered
    failed = {c["rule"]: c["message"] for c in found["rules"] if c["status"] == "failed"}
    assert set(failed) == {"verl-transformers-5", "verl-training-flash-attn"}
    assert failed["verl-transformers-5"].startswith("verl 0.4.1 with transformers 5.20.2: ImportError")
    assert found["words"].startswith("not offered: rule verl-transformers-5 (verl 0.4.1 with transformers 5.20.2); "
                                     "rule verl-training-flash-attn (verl 0.4.1 without flash-attn)")
    # the hint no longer sends the user to it without saying so
    assert o.hints[1].endswith(f"add-row --vllm 0.33.0 --verl 0.4.1 ({found['words']})")
    assert ("→ vLLM 0.33.0: newest verl that resolves 0.4.1 (override) — not offered: rule verl-transformers-5"
            in plain(cli_outdated._note(o)))
    # the other nearest pairing passes every rule and is offered
    assert o.nearest["vllm"]["offered"] is True


def test_a_proposal_outside_a_declared_python_range_is_not_offered(rows):
    """verl 0.9.1 declares Requires-Python <3.13, whose upper bound uv ignores: on Python 3.13 its override row for
    vLLM 0.31.0 resolves but rule python-requires refuses it; verl 0.9.0 (>=3.10) for vLLM 0.25.0 is offered."""
    r = report(rows, python="3.13")
    by = {o.version: o for o in r.outcomes}
    refused = by["0.31.0"]
    assert refused.proposal is not None and refused.proposal.pins["verl"] == "0.9.1"
    assert not refused.offered and not refused.addable
    assert refused.reason == ("not offered: rule python-requires (verl 0.9.1 requires Python <3.13,>=3.10, the row "
                              "has 3.13)")
    assert [o.version for o in r.addable] == ["0.25.0"] and r.exit_code == 1
    assert cli_outdated.summary(r) == "1 row(s) can be added: build.py add-row --vllm 0.25.0"
    data = json.loads(cli_outdated.render_json(r))
    row = next(x for x in data["rows"] if x["version"] == "0.31.0")
    assert row["row"]["offered"] is False and row["reason"] == refused.reason
    assert plain(cli_outdated._note(refused)).startswith("not offered: rule python-requires")


def test_the_rules_also_refuse_what_addrow_apply_would(rows):
    """The check is the rule engine over the row as the matrix would load it: the same results as validate's."""
    shot, resolver = with_verl_041()
    proposal = addrow.propose("0.33.0", "3.11", "0.4.1", index=shot, resolver=resolver)
    row = proposal.row()
    assert (row.verl, row.vllm, row.transformers, row.flash_attn) == ("0.4.1", "0.33.0", "5.20.2", None)
    assert row.overrides["vllm"].version == "0.33.0" and "found by add-row" in row.overrides["vllm"].reason
    with requires.answered_by(shot.answers(live=False)):
        vetting = outdated.vet(proposal)
    assert not vetting.offered and {c.rule for c in vetting.refused} == {"verl-transformers-5", "verl-training-flash-attn"}
    # verl's declared vllm range is left on purpose (the override carries the reason), and says so
    ranges = next(c for c in vetting.checks if c.rule == "verl-declared-ranges")
    assert ranges.status == "passed" and "vllm 0.33.0 leaves vllm<=0.8.5 (its vllm extra) on purpose" in ranges.message


# --- a pairing that passes says what was checked --------------------------------------------------------------------


def test_an_offered_pairing_says_what_was_checked(rows):
    r = report(rows)
    o = next(o for o in r.outcomes if o.version == "0.31.0")
    assert o.offered and o.addable and o.reason is None
    words = o.vetting.words()
    passed = words.split("rules passed: ", 1)[1].split(";", 1)[0].split(", ")
    assert {"verl-declared-ranges", "python-requires", "vllm-declared-floors", "verl-transformers-5",
            "tensordict-forkingpickler", "verl-training-flash-attn"} <= set(passed)
    assert words.startswith("checked: uv resolution; rules passed: ")
    assert words.endswith("not checked: imports and GPU runs (no image is built)")
    data = json.loads(cli_outdated.render_json(r))
    row = next(x for x in data["rows"] if x["version"] == "0.31.0")["row"]
    assert row["offered"] is True and row["not_checked"] == "imports and GPU runs (no image is built)"
    statuses = {c["rule"]: c["status"] for c in row["rules"]}
    assert statuses["flash-attn-prebuilt-wheel"] == "n/a" and statuses["verl-declared-ranges"] == "passed"
    assert {c["rule"] for c in row["rules"]} == {spec.id for spec in outdated.rules.load().rules}  # every rule
    ranges = next(c for c in row["rules"] if c["rule"] == "verl-declared-ranges")["message"]
    assert "vllm 0.31.0 leaves vllm==0.24.0 (its vllm extra) on purpose" in ranges
    assert "transformers 5.10.4 in transformers!=5.6.0,<5.11,>=5.5.3" in ranges
    assert plain(cli_outdated._note(o)).splitlines() == [
        "can be added: override: verl 0.9.1 declares vllm==0.24.0 in its vllm extra", words]
    nearest = plain(cli_outdated._note(next(o for o in r.outcomes if o.version == "0.33.0")))
    assert "→ verl 0.9.1: newest vLLM that resolves 0.31.0 (override) — offered; checked: uv resolution; rules passed:" \
        in nearest


# --- the facts the rules read come from the snapshot ------------------------------------------------------------


def test_offline_the_rules_read_the_saved_snapshot_and_nothing_else(run, write_matrix, tmp_path, monkeypatch):
    monkeypatch.setenv("IMAGEMATRIX_CACHE", str(tmp_path / "cache"))
    from tests.unit.assist.test_outdated import fake_uv
    fake_uv(monkeypatch)
    monkeypatch.setattr(outdated.resolutions.pypi, "index_url", lambda: "https://pypi.org/simple")
    index_snapshot.save(snapshot())
    matrix = matrix_mod.load(write_matrix(MATRIX))
    outdated.build_report(matrix.rows, snapshot(), outdated.resolutions.Resolver(index="https://pypi.org/simple"),
                          python="3.11", now=NOW)  # what an online run leaves in the answer cache
    result = run("outdated", "--offline", "--json", "--matrix", matrix.path)
    data = json.loads(result.out)
    assert result.code == 1 and data["addable"] == 2, result
    assert all(x["row"]["offered"] for x in data["rows"] if x["row"])


def test_a_snapshot_without_the_facts_offers_nothing_unchecked(rows):
    """Offline over a snapshot an older version saved (format 2: no Requires-Dist), the rules that need one cannot be
    checked: nothing is offered, and each proposal says which rule could not be checked and how to fix that."""
    old = snapshot().to_json()
    old["format"] = 2
    del old["requires_dist"], old["other_python"]
    shot = index_snapshot.Snapshot.from_json(old)
    r = report(rows, shot, offline=True)
    assert not r.addable and r.exit_code == 0
    o = next(o for o in r.outcomes if o.version == "0.31.0")
    assert o.reason.startswith("not offered: rule vllm-declared-floors could not be checked (cannot read vllm "
                               "0.31.0's declared requirements)")
    data = json.loads(cli_outdated.render_json(r))
    rules_of = next(x for x in data["rows"] if x["version"] == "0.31.0")["row"]["rules"]
    assert any("run `build.py outdated` without --offline" in c["message"] for c in rules_of if c["status"] == "unchecked")


def test_online_a_fact_the_snapshot_lacks_is_read_once_and_recorded(rows, monkeypatch):
    shot = snapshot()
    lines = shot.requires_dist.pop("vllm==0.31.0")
    read = []
    monkeypatch.setattr(requires, "read_requires_dist", lambda package, version: read.append((package, version))
                        or tuple(lines))
    r = report(rows, shot, offline=False)
    assert read == [("vllm", "0.31.0")] and shot.requires_dist["vllm==0.31.0"] == lines
    assert "0.31.0" in [o.version for o in r.addable]
    again = index_snapshot.Snapshot.from_json(json.loads(json.dumps(shot.to_json())))  # saved with it
    assert again.answers(live=False).requires_dist("vllm", "0.31.0") == tuple(lines)
