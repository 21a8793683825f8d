import hashlib

import pytest
import torch

from mmlab.data import COLORS, SHAPES, ShapesWorld, digits, photos


@pytest.fixture(scope="module")
def world():
    return ShapesWorld(image_size=32, seed=0)


def test_defaults(world):
    assert len(world.colors) >= 6 and len(world.shapes) >= 4
    b = world.sample(64, seed=1)
    assert b.images.shape == (64, 3, 32, 32) and b.images.dtype == torch.float32
    assert 0.0 <= b.images.min() and b.images.max() <= 1.0
    assert all(cap == f"a {c} {s}" for cap, c, s in zip(b.captions, b.colors, b.shapes))
    assert len(b) == 64


def test_same_seed_same_batch_other_seed_differs(world):
    a, b = world.sample(32, seed=5), world.sample(32, seed=5)
    assert torch.equal(a.images, b.images) and a.captions == b.captions
    c = world.sample(32, seed=6)
    assert not torch.equal(a.images, c.images)
    assert torch.equal(ShapesWorld(seed=0).sample(32, seed=5).images, a.images)  # a new world object, same batch


def test_splits_are_disjoint_and_cover(world):
    held = set(world.heldout_pairs)
    assert held and held.isdisjoint(world.train_pairs)
    assert held | set(world.train_pairs) == set(world.pairs)
    # every colour and every shape still occurs in training (compositional split)
    assert {c for c, _ in world.train_pairs} == set(world.colors)
    assert {s for _, s in world.train_pairs} == set(world.shapes)
    tr = world.sample(2000, "train", seed=2)
    assert set(zip(tr.colors, tr.shapes)) == set(world.train_pairs)
    ho = world.sample(500, "heldout", seed=3)
    assert set(zip(ho.colors, ho.shapes)) == held


def test_pixels_match_caption_colour(world):
    # the brightest-saturation pixels of each image are close to its caption's colour
    b = world.sample(200, seed=4)
    ref = torch.tensor([COLORS[c] for c in world.colors])  # (C, 3)
    sat = b.images.amax(1) - b.images.amin(1)  # (N, H, W)
    mask = sat > 0.5
    mean_rgb = (b.images * mask[:, None]).sum((2, 3)) / mask.sum((1, 2))[:, None]  # (N, 3)
    nearest = torch.cdist(mean_rgb, ref).argmin(1)
    assert [world.colors[i] for i in nearest] == b.colors


def test_explicit_pairs(world):
    b = world.sample(len(world.train_pairs), seed=0, pairs=world.train_pairs)
    assert list(zip(b.colors, b.shapes)) == world.train_pairs
    with pytest.raises(ValueError, match="not in split"):
        world.sample(1, "train", pairs=[world.heldout_pairs[0]])
    with pytest.raises(ValueError, match="pairs must hold n=2"):
        world.sample(2, pairs=[world.train_pairs[0]])


def test_richer_scenes():
    w = ShapesWorld(size_words=True, position_words=True, seed=0)
    b = w.sample(50, seed=0)
    for cap, size, c, s, pos, (x, _) in zip(b.captions, b.sizes, b.colors, b.shapes, b.positions, b.centers):
        assert cap == f"a {size} {c} {s} on the {pos}"
        assert (x < 16) == (pos == "left")
    p = ShapesWorld(scene="pair", seed=0).sample(50, seed=0)
    for cap, c, s, rel, c2, s2, in zip(p.captions, p.colors, p.shapes, p.relations, p.colors2, p.shapes2):
        assert cap == f"a {c} {s} {rel} a {c2} {s2}" and c != c2 and s != s2
    for (x1, y1), rel in zip(p.centers, p.relations):  # the first object lies in the half its relation says
        half = {"left of": x1 < 16, "right of": x1 > 16, "above": y1 < 16, "below": y1 > 16}[rel]
        assert half, rel
    q = ShapesWorld(scene="pair", relations=("and",)).sample(5, split="all")
    assert all(" and a " in c for c in q.captions)


@pytest.mark.parametrize("kwargs, digest", [
    ({}, "b68b51433d4dbcbe"),
    ({"scene": "pair"}, "c811cbb2a44bf04e"),
    ({"size_words": True, "position_words": True}, "bf37a9fbdc11d09b"),
])
def test_the_images_stay_the_same_bytes(kwargs, digest):
    """Every seed table rests on these images: any change to the renderer must draw the same float32 bytes (numpy's
    generator and elementwise float32 arithmetic are the same on every machine). Digests of the renderer of 2026-12-04."""
    images = ShapesWorld(image_size=32, seed=0, **kwargs).sample(300, "all", seed=7).images
    assert hashlib.sha256(images.numpy().tobytes()).hexdigest()[:16] == digest


def test_ten_thousand_images(world):  # how fast: `mmlab bench` (budget 5 s), never asserted here
    b = world.sample(10_000, seed=9)
    assert b.images.shape == (10_000, 3, 32, 32) and b.images.is_floating_point()


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"colors": ["red", "mauve"]}, ValueError, "colors has unknown entries"),
        ({"shapes": ["circle", "hexagon"]}, ValueError, "shapes has unknown entries"),
        ({"image_size": 8}, ValueError, "image_size must be >= 16"),
        ({"image_size": 20, "scene": "pair"}, ValueError, "image_size must be >= 24"),
        ({"image_size": 32.0}, TypeError, "image_size must be an int"),
        ({"scene": "triple"}, ValueError, "scene must be"),
        ({"colors": ["red"]}, ValueError, "at least 2"),
    ],
)
def test_bad_world_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        ShapesWorld(**kwargs)


def test_bad_sample_arguments(world):
    with pytest.raises(ValueError, match="n must be >= 0"):
        world.sample(-1)
    with pytest.raises(TypeError, match="n must be an int"):
        world.sample(2.5)
    with pytest.raises(ValueError, match="split must be one of"):
        world.sample(3, split="test")
    assert len(world.sample(0)) == 0


def test_digits_and_photos():
    images, labels = digits()
    assert images.shape == (1797, 1, 8, 8) and images.dtype == torch.float32
    assert labels.shape == (1797,) and labels.dtype == torch.long and set(labels.tolist()) == set(range(10))
    assert 0 <= images.min() and images.max() <= 1
    ph = photos()
    assert {"astronaut", "coffee", "chelsea", "china", "flower"} <= set(ph)
    for img in ph.values():
        assert img.ndim == 3 and img.shape[0] == 3 and 0 <= img.min() and img.max() <= 1


def test_constants_exported():
    assert len(COLORS) >= 6 and len(SHAPES) >= 4
