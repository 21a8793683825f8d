import pytest
import torch

from mmlab.data import ShapesWorld
from mmlab.fusion import FusionClassifier, planted_task, train_fusion


@pytest.fixture(scope="module")
def world():
    return ShapesWorld(seed=0)


def test_planted_rules(world):
    img = planted_task("image", 300, world, seed=1)
    assert torch.equal(img.labels, img.image_colors) and img.inputs["image"].shape == (300, 3, 32, 32)
    txt = planted_task("text", 300, world, seed=1)
    assert torch.equal(txt.labels, txt.text_colors)
    assert torch.equal(txt.inputs["text"].argmax(-1)[:, -1] - 3, txt.text_colors)  # the hint word names the colour
    red = planted_task("redundant", 300, world, seed=1)
    assert torch.equal(red.image_colors, red.text_colors) and torch.equal(red.labels, red.image_colors)
    mix = planted_task("mixed", 4000, world, seed=1, image_weight=0.7)
    differ = mix.image_colors != mix.text_colors
    follows_image = (mix.labels == mix.image_colors)[differ].float().mean().item()
    assert abs(follows_image - 0.7) < 0.03


def test_errors(world):
    with pytest.raises(ValueError, match="name must be one of"):
        planted_task("audio", 10, world)
    with pytest.raises(ValueError, match="image_weight must lie in"):
        planted_task("mixed", 10, world, image_weight=1.5)
    with pytest.raises(ValueError, match="fusion must be"):
        FusionClassifier(6, 9, fusion="middle")


@pytest.mark.parametrize("fusion", ["early", "late"])
def test_models_learn_the_planted_rule(world, fusion):
    task = planted_task("image", 1500, world, seed=2)
    test = planted_task("image", 300, world, seed=3)
    model, history = train_fusion(task, fusion, num_steps=150)
    with torch.no_grad():
        acc = (model(test.inputs).argmax(-1) == test.labels).float().mean().item()
    assert acc > 0.9 and history.losses[-1] < history.losses[0]
