"""The committed seed tables: every seed ran green and every bar they record holds. Those the notebooks show
(`mmlab seeds`, one notebook at a time on all the cores, how `mmlab run --inplace` stores the outputs) and those of
`mmlab run`'s default on 2 cores, two notebooks side by side on one thread each (`notebooks/seeds/one-thread/`,
`scripts/suite_seed_study.py`). Records of other CPUs (`notebooks/seeds/other-cpus/`) are evidence as measured,
failures included."""

import json
import operator
import re
from pathlib import Path

import pytest

SEEDS = Path(__file__).resolve().parent.parent / "notebooks" / "seeds"
TABLES = sorted(SEEDS.glob("*.json"))
ONE_THREAD = sorted(p for p in (SEEDS / "one-thread").glob("*.json") if p.name != "runs.json")
BAR = re.compile(r"\((>=|>|<=|<) (-?\d+(?:\.\d+)?)\)$")  # "composed prompts, held-out (>= 0.90)"
OPS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}
# recorded, not asserted by the notebooks, or a bar in units the name does not carry ("x chance": the notebook knows chance)
NOT_A_BAR = re.compile(r"\((measured|speed ratio|speed-up|> \d+ x chance)\)$")


def bars_of(row: dict) -> dict[str, tuple[str, float, float]]:
    out = {}
    for name, value in (row.get("bars") or {}).items():
        match = BAR.search(name)
        if match is None:
            assert NOT_A_BAR.search(name), f"bar {name!r}: no threshold this test can read"
            continue
        out[name] = (match.group(1), float(match.group(2)), value)
    return out


def test_the_tables_are_there():
    assert [t.stem[:2] for t in TABLES] == ["01", "02", "03", "04", "05"]
    assert [t.stem[:2] for t in ONE_THREAD] == ["01", "02", "03", "04", "05"]


@pytest.mark.parametrize("path", TABLES + ONE_THREAD, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_seed_ran_green_and_met_every_bar(path):
    study = json.loads(path.read_text())
    assert sorted(r["seed"] for r in study["rows"]) == [0, 1, 2, 3, 4] == study["seeds"]
    for row in study["rows"]:
        assert row["status"] == "ok", f"seed {row['seed']}: {row['error']}"
        checked = bars_of(row)
        assert checked, f"seed {row['seed']} recorded no bars"
        missed = {name: value for name, (op, threshold, value) in checked.items() if not OPS[op](value, threshold)}
        assert not missed, f"seed {row['seed']} of {path.name} missed {missed}"


def test_a_missed_bar_is_caught():
    row = {"bars": {"EM held-out pairs (>= 0.80)": 0.79, "template spread (measured)": 0.5}}
    (op, threshold, value), = bars_of(row).values()
    assert not OPS[op](value, threshold)
    with pytest.raises(AssertionError, match="no threshold"):
        bars_of({"bars": {"accuracy (about 0.9)": 0.9}})


@pytest.mark.parametrize("path", ONE_THREAD, ids=lambda p: p.stem)
def test_the_one_thread_table_checks_the_bars_the_notebook_asserts_now(path):
    """A bar changed in a notebook (and its own table re-run) leaves the one-thread table checking the old bar."""
    def asserted(p: Path) -> set[str]:
        return {name for row in json.loads(p.read_text())["rows"] for name in bars_of(row)}

    assert asserted(path) == asserted(SEEDS / path.name), "re-run scripts/suite_seed_study.py"
