"""mmlab.claims: one statement per claim — printed, recorded (MMLAB_REPORT) and asserted; measured figures recorded only."""

import json

import numpy as np
import pytest
import torch

from mmlab import claims


@pytest.fixture(autouse=True)
def fresh(monkeypatch, tmp_path):
    claims.reset()
    monkeypatch.setenv("MMLAB_REPORT", str(tmp_path / "report.json"))
    monkeypatch.delenv("MMLAB_CLAIMS", raising=False)
    yield tmp_path / "report.json"
    claims.reset()


def test_a_claim_is_printed_recorded_and_asserted(fresh, capsys):
    assert claims.check("held-out accuracy", torch.tensor(0.93), ">=", 0.9) == pytest.approx(0.93)
    claims.measure("gap", np.float32(-0.01))
    out = capsys.readouterr().out
    assert "held-out accuracy" in out and ">= 0.9" in out and "ok" in out and "measured  gap" in out
    report = json.loads(fresh.read_text())
    assert report["claims"] == {"held-out accuracy": {"value": pytest.approx(0.93), "op": ">=", "bar": 0.9}}
    assert report["measured"] == {"gap": pytest.approx(-0.01)}
    with pytest.raises(AssertionError, match="claim 'EM': 0.94 is not > 0.95"):
        claims.check("EM", 0.94, ">", 0.95)
    assert json.loads(fresh.read_text())["claims"]["EM"]["value"] == 0.94  # recorded before the assert fails


def test_report_mode_records_a_miss_without_asserting(monkeypatch, capsys):
    monkeypatch.setenv("MMLAB_CLAIMS", "report")
    claims.check("EM", 0.5, ">=", 0.9)
    assert "MISSED (reported" in capsys.readouterr().out
    monkeypatch.setenv("MMLAB_CLAIMS", "sometimes")
    with pytest.raises(ValueError, match="MMLAB_CLAIMS must be"):
        claims.check("EM", 0.85, ">=", 0.9)  # read when a claim misses: report it, or assert


def test_bad_statements_name_what_is_wrong():
    with pytest.raises(ValueError, match="op must be one of"):
        claims.check("a", 1.0, "=>", 0.5)
    with pytest.raises(TypeError, match="value must be a number, got a tensor of shape"):
        claims.check("a", torch.ones(2), ">", 0.5)
    with pytest.raises(ValueError, match="value must be finite"):
        claims.check("a", float("nan"), ">", 0.5)
    with pytest.raises(ValueError, match="name must be a non-empty string"):
        claims.measure("", 1.0)
    claims.check("a", 1.0, ">", 0.5)
    with pytest.raises(ValueError, match="stated twice with different bars"):
        claims.check("a", 1.0, ">", 0.6)
    with pytest.raises(ValueError, match="already a claim"):
        claims.measure("a", 1.0)
    claims.measure("b", 1.0)
    with pytest.raises(ValueError, match="already recorded as measured"):
        claims.check("b", 1.0, ">", 0.5)


def test_seconds_are_recorded_never_asserted(fresh):
    claims.seconds({"tiny CLIP training": 84.4})
    recorded = json.loads(fresh.read_text())
    times = recorded["seconds"]
    assert times == {"tiny CLIP training": 84.4} and recorded["claims"] == {}
