"""The committed seed tables back every asserted claim with room.

Two tables per notebook: `notebooks/seeds/` (`mmlab seeds NN`: one notebook at a time on all the cores, how
`mmlab run --inplace` stores the outputs) and `notebooks/seeds/one-thread/` (`mmlab seeds NN --suite`: `mmlab run`'s
default on 2 cores, two notebooks side by side on one thread each). Records of other CPUs (`docs/evidence/`) are
evidence as measured, failures included, and are not checked here.

The margin rule: over seeds 0-4 a claim's worst seed clears its bar by at least half the seeds' spread
(min - bar >= (max - min) / 2, mirrored for an upper bar), because another machine acts as a sixth seed. The operator
and bar come from the notebook's own `claims.check` statements (the JSON alone is not the truth).
"""

import json
from pathlib import Path

import nbformat
import pytest

from mmlab.claims import OPS
from mmlab.seeds import margin_ratio, summarise
from mmlab.tools.seed_study import declared_claims, matches

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT / "notebooks" / "seeds"
TABLES = sorted(SEEDS.glob("*.json"))
ONE_THREAD = sorted(p for p in (SEEDS / "one-thread").glob("*.json") if p.name != "runs.json")


def _declared(stem: str):
    return declared_claims(nbformat.read(ROOT / "notebooks" / f"{stem}.ipynb", as_version=4))


def test_the_tables_are_there():
    assert [t.stem[:2] for t in TABLES] == ["01", "02", "03", "04", "05"]
    assert [t.stem[:2] for t in ONE_THREAD] == ["01", "02", "03", "04", "05"]


@pytest.mark.parametrize("path", TABLES + ONE_THREAD, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_claim_has_room_over_seeds_0_to_4(path):
    study = json.loads(path.read_text())
    assert sorted(r["seed"] for r in study["rows"]) == [0, 1, 2, 3, 4] == study["seeds"]
    declared, measured = _declared(study["notebook"])
    for row in study["rows"]:
        assert row["status"] == "ok", f"seed {row['seed']}: {row['error']}"
    # The table's claims are the notebook's: same names, operators and bars; a figure it asserts is not "measured".
    for name, claim in study["claims"].items():
        hits = [d for d in declared if matches(d, name)]
        assert len(hits) == 1, f"{path.name}: {name!r} is not a claim the notebook states now: re-run its seeds"
        assert (claim["op"], claim["bar"]) == (declared[hits[0]]["op"], declared[hits[0]]["bar"]), name
    for template in declared:
        assert any(matches(template, n) for n in study["claims"]), f"{path.name}: no seed backs the claim {template!r}"
    summary = summarise(study["rows"])
    thin = {}
    for name, claim in study["claims"].items():
        assert summary[name]["n"] == 5, f"{name}: recorded by {summary[name]['n']} of 5 seeds"
        values = [r["bars"][name] for r in study["rows"]]
        missed = [v for v in values if not OPS[claim["op"]](v, claim["bar"])]
        assert not missed, f"{path.name}: {name} missed its bar at {missed}"
        room = margin_ratio(claim, summary[name])
        if room is not None and room < 1:
            thin[name] = round(room, 2)
    assert not thin, f"{path.name}: claims within half the seeds' spread of their bar (assert them only measured): {thin}"
    for name in (n for r in study["rows"] for n in r["bars"] if n not in study["claims"]):
        assert any(matches(m, name) for m in measured), f"{path.name}: {name!r} is neither claimed nor measured now"


def test_the_margin_rule_catches_a_thin_claim():
    thin = summarise([{"bars": {"x": v}} for v in (0.03, 0.05, 0.2, 0.25, 0.3)])["x"]   # spread 0.27, min 0.03 over 0
    assert margin_ratio({"op": ">", "bar": 0}, thin) == pytest.approx(0.03 / 0.135)
    upper = summarise([{"bars": {"x": v}} for v in (0.01, 0.02, 0.05)])["x"]          # bar 0.1: room 0.05, half 0.02
    assert margin_ratio({"op": "<=", "bar": 0.1}, upper) == pytest.approx(2.5)
    assert margin_ratio({"op": "==", "bar": 8}, upper) is None
    same = summarise([{"bars": {"x": 1.0}} for _ in range(5)])["x"]
    assert margin_ratio({"op": ">=", "bar": 0.9}, same) == float("inf")
    assert margin_ratio({"op": ">", "bar": 1.0}, same) == float("-inf")


def test_declared_claims_read_literals_and_f_string_templates():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        'claims.check("acc", a, ">=", 0.9)\nfor m in ms:\n    claims.check(f"{m}: score", s, ">", 8 / 24)\n'
        'claims.measure("gap", g)')])
    declared, measured = declared_claims(nb)
    assert declared == {"acc": {"op": ">=", "bar": 0.9}, "{...}: score": {"op": ">", "bar": 8 / 24}}
    assert measured == ["gap"]
    assert matches("{...}: score", "ViT: score") and not matches("{...}: score", "ViT: score minus chance")
    with pytest.raises(ValueError, match="a bar must be a number"):
        declared_claims(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell('claims.check("a", a, ">", bar)')]))
    with pytest.raises(ValueError, match="stated twice"):
        declared_claims(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
            'claims.check("a", a, ">", 1)\nclaims.check("a", b, ">", 1)')]))


def test_a_new_table_names_each_claim_a_loop_stated():
    from mmlab.tools.seed_study import table

    rows = [{"seed": 0, "status": "ok", "bars": {"ViT: score": 0.9, "CLIP: score": 0.8, "gap": 0.1}}]
    made = table("04_x", rows, {"{...}: score": {"op": ">", "bar": 0.25}}, threads=1)
    assert made["claims"] == {"ViT: score": {"op": ">", "bar": 0.25}, "CLIP: score": {"op": ">", "bar": 0.25}}
    assert set(made["summary"]) == {"ViT: score", "CLIP: score", "gap"}
