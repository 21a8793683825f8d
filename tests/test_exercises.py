"""Every exercise accepts its solution on several seeds, rejects each classic mistake by name, and says what a stub
lacks."""

import subprocess
import sys

import pytest

from mmlab import exercises


@pytest.mark.parametrize("name", exercises.names())
def test_solution_passes_on_several_seeds(name, capsys):
    for seed in (0, 1, 12345):
        exercises.check(name, exercises.solution(name), seed=seed)
    assert capsys.readouterr().out.count("correct") == 3


@pytest.mark.parametrize("name", exercises.names())
def test_classic_mistakes_are_named(name):
    mistakes = exercises.EXERCISES[name].mistakes
    assert len(mistakes) >= 2
    for why, wrong in mistakes.items():
        with pytest.raises(AssertionError) as err:
            exercises.check(name, wrong, seed=7)
        assert why in str(err.value) and "seed 7" in str(err.value)


def test_at_least_two_per_notebook_and_ten_in_all():
    per_notebook = {}
    for ex in exercises.EXERCISES.values():
        per_notebook[ex.notebook] = per_notebook.get(ex.notebook, 0) + 1
    assert len(exercises.names()) >= 10 and per_notebook == {nb: per_notebook[nb] for nb in ("01", "02", "03", "04", "05")}
    assert min(per_notebook.values()) >= 2


def test_stub_wrong_shape_and_errors():
    def stub(*args):
        raise NotImplementedError

    with pytest.raises(AssertionError, match="not written yet"):
        exercises.check("infonce", stub)
    with pytest.raises(AssertionError, match="raised ZeroDivisionError"):
        exercises.check("q_sample", lambda *a: 1 / 0)
    with pytest.raises(AssertionError, match="expected"):
        exercises.check("patchify", lambda x, p: x)
    with pytest.raises(ValueError, match="no exercise named"):
        exercises.check("nope", stub)
    with pytest.raises(TypeError, match="fn must be"):
        exercises.check("infonce", "infonce")
    assert "logit_scale" in exercises.hint("infonce")


def test_attempt_prints_the_verdict_without_raising(capsys):
    def stub(num_query_tokens, text_length):
        raise NotImplementedError

    assert exercises.attempt("itc_mask", stub) is False
    assert "itc_mask: not written yet" in capsys.readouterr().out
    assert exercises.attempt("itc_mask", exercises.solution("itc_mask")) is True
    assert "correct: itc_mask" in capsys.readouterr().out


def test_importing_exercises_leaves_blip2_out_of_other_notebooks_stamps():
    """A notebook's stamp digests every mmlab module loaded in its kernel: BLIP-2's enter only where a mask is graded."""
    code = ("import sys; from mmlab import exercises; print('mmlab.blip2' in sys.modules); "
            "exercises.check('itc_mask', exercises.solution('itc_mask')); print('mmlab.blip2' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "False" and out[-1] == "True"
