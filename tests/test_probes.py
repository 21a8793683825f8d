"""mmlab.tools.probes: a recipe's fields overridden by name and type, never a notebook's text."""

import pytest

from mmlab.blip2 import TinyBlip2Recipe
from mmlab.clip import TinyClipRecipe
from mmlab.dalle import TinyDalleRecipe
from mmlab.tools.probes import PROBES, parse_overrides, recipe_of


def test_overrides_are_typed_by_the_recipe():
    assert parse_overrides(TinyClipRecipe, ["num_steps=3600"]) == {"num_steps": 3600}
    assert parse_overrides(TinyDalleRecipe, ["vq_lr=1e-3", "block_out_channels=8,16,16"]) == {
        "vq_lr": 0.001, "block_out_channels": (8, 16, 16)}
    assert recipe_of("clip") is TinyClipRecipe and recipe_of("blip2") is TinyBlip2Recipe and recipe_of("dalle") is TinyDalleRecipe
    assert set(PROBES) == {"clip", "blip2", "dalle"}


def test_a_bad_override_names_the_field_and_the_choices():
    with pytest.raises(ValueError, match="expected FIELD=VALUE with FIELD one of"):
        parse_overrides(TinyClipRecipe, ["num_stepz=3"])
    with pytest.raises(ValueError, match="seed"):
        parse_overrides(TinyClipRecipe, ["seed=3"])  # the seed is the probe's argument, not a field to override
    with pytest.raises(ValueError, match="num_steps must be int"):
        parse_overrides(TinyClipRecipe, ["num_steps=many"])
