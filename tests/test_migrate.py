"""mmlab.tools.migrate: a record is re-stamped only when the code it came from executes as the code now does."""

from mmlab.tools import migrate

OLD_IMPORT = "from mmlab.runtime import report, settings"
NEW_IMPORT = "from mmlab.settings import settings\nfrom mmlab import claims"
STUDY = 'small = studies.run("01_x", "small batch", study)'


def test_the_declared_import_rewrite_is_the_only_difference_allowed():
    old = [f"{OLD_IMPORT}\nSETTINGS = settings()", "x = 1  # a comment", STUDY, "report('01', {})"]
    new = [f"{NEW_IMPORT}\nSETTINGS = settings()", "x = 1", STUDY, "claims.check('a', 1, '>', 0)"]
    assert migrate.same_code_up_to(old, new, "small batch") == (True, "the same code up to the study")
    changed = [new[0], "x = 2", STUDY, new[3]]
    assert migrate.same_code_up_to(old, changed, "small batch") == (False, "the code up to the study changed")
    uses_report = [old[0], "report('early', {})", STUDY, old[3]]  # a rewritten name used before the study
    ok, why = migrate.same_code_up_to(uses_report, [new[0], "report('early', {})", STUDY, new[3]], "small batch")
    assert not ok and "report" in why
    assert not migrate.same_code_up_to(old, [new[0], new[1], "y = 0", STUDY], "small batch")[0]  # a cell more before it


def test_a_printed_label_is_not_code_a_study_depends_on():
    old = ['print(f"final logit_scale = {scale:.1f}")', STUDY]
    assert migrate.same_code_up_to(old, ['print(f"final exp(logit_scale) = {scale:.1f}")', STUDY], "small batch")[0]
    assert not migrate.same_code_up_to(old, ['print(f"final logit_scale = {scale + 1:.1f}")', STUDY], "small batch")[0]
    assert not migrate.same_code_up_to(old, ['label = "x"\nprint(label)', STUDY], "small batch")[0]


def test_definitions_ignore_docstrings_imports_and_order():
    a = '"""Module."""\nimport os\n\ndef f():\n    """Doc."""\n    return 1\n\nX = 2\n'
    b = "X = 2\n\ndef f():\n    return 1  # same code\n"
    assert migrate.definitions(a) == migrate.definitions(b)
    assert migrate.definitions(a) != migrate.definitions(b.replace("return 1", "return 2"))
    assert migrate.definitions(a, removed=("f",)) == migrate.definitions("X = 2\n")
