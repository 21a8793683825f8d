import pytest
import torch

from mmlab.data import ShapesWorld
from mmlab.vqa import WordVocab, answer_space, patch_boxes, question_vocab, vqa_batch


@pytest.fixture(scope="module")
def world():
    return ShapesWorld(scene="pair", seed=0)


def test_answers_are_true_of_the_scene(world):
    b = vqa_batch(world, 400, seed=1)
    opposite = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
    for q, a, kind, i in zip(b.questions, b.answers, b.kinds, range(len(b))):
        s = b.scenes
        if kind == "color":
            shape = q.split()[4]
            assert a == (s.colors[i] if shape == s.shapes[i] else s.colors2[i])
        else:
            words = q.split()
            ca, cb = words[2], words[-3]
            rel = " ".join(words[4:-4])
            truth = s.relations[i] if (ca, cb) == (s.colors[i], s.colors2[i]) else opposite[s.relations[i]]
            assert (a == "yes") == (rel == truth), (q, a, s.captions[i])
    assert torch.equal(b.answer_ids, torch.tensor([answer_space(world).index(x) for x in b.answers]))
    rel = [a for a, k in zip(b.answers, b.kinds) if k == "relation"]
    assert 0.4 < rel.count("yes") / len(rel) < 0.6  # balanced yes/no
    assert 0.4 < b.kinds.count("color") / len(b) < 0.6


def test_deterministic(world):
    a, b = vqa_batch(world, 20, seed=3), vqa_batch(world, 20, seed=3)
    assert a.questions == b.questions and torch.equal(a.images, b.images)


def test_vocab_round_trip_and_errors(world):
    v = question_vocab(world)
    b = vqa_batch(world, 50, seed=2)
    ids = v.encode(b.questions, 12)
    assert ids.shape == (50, 12) and (ids[:, 0] == v.cls_id).all()
    assert v.decode(ids) == b.questions
    assert v.encode(["zebra"], 4)[0, 1] == v.unk_id
    with pytest.raises(ValueError, match="more than length=3"):
        v.encode(["what color is the circle ?"], 3)
    with pytest.raises(TypeError, match="not a single string"):
        v.encode("a red circle", 8)
    assert len(WordVocab(["b", "a", "a"])) == 6


def test_bad_world():
    with pytest.raises(ValueError, match="scene='pair'"):
        vqa_batch(ShapesWorld(), 2)
    with pytest.raises(ValueError, match="must be spatial"):
        vqa_batch(ShapesWorld(scene="pair", relations=("and",)), 2)


def test_patch_boxes():
    boxes = patch_boxes(4)
    assert boxes.shape == (16, 4) and boxes[0].tolist() == [0, 0, 0.25, 0.25] and boxes[-1].tolist() == [0.75, 0.75, 1, 1]
    with pytest.raises(ValueError, match="grid must be >= 1"):
        patch_boxes(0)
