"""Notebook 04's zoo: the wrappers run on the reference classes, read-outs have the right shapes, and the attention
topology separates the four designs (the notebook asserts the same on its trained models)."""

import pytest
import torch

from mmlab import clip as mclip
from mmlab import zoo
from mmlab.data import ShapesWorld
from mmlab.vqa import answer_space, patch_boxes, question_vocab, vqa_batch

SCENES = ShapesWorld(image_size=32, seed=0, scene="pair")
VOCAB, ANSWERS = question_vocab(SCENES), answer_space(SCENES)
BOXES = patch_boxes(4)


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    clip_model = mclip.build_clip(mclip.TinyClipRecipe().model_cfg)
    return (zoo.SingleStreamVQA(len(VOCAB), len(ANSWERS), BOXES).eval(), zoo.DualStreamVQA(len(VOCAB), len(ANSWERS), BOXES).eval(),
            clip_model.eval(), zoo.build_coca(VOCAB, BOXES).eval())


def test_vqa_heads_and_coca_read_outs_have_the_right_shapes(models):
    uniter, lxmert, _, coca = models
    batch = vqa_batch(SCENES, 3, seed=1)
    ids, feats = VOCAB.encode(batch.questions, 12), torch.randn(3, 16, 128)
    for model in (uniter, lxmert):
        assert model(ids, feats)[0].shape == (3, len(ANSWERS))
    assert zoo.coca_answer(coca, feats, batch.questions, VOCAB, ANSWERS).shape == (3, len(ANSWERS))
    captions = zoo.coca_caption(coca, feats, VOCAB, max_len=4)
    assert len(captions) == 3 and all(c.startswith("a") for c in captions)
    assert "boxes" not in uniter.state_dict()  # a fixed input, not a weight


def test_attention_topology_tells_the_designs_apart(models):
    uniter, lxmert, clip_model, coca = models
    ids = VOCAB.encode(vqa_batch(SCENES, 1, seed=2).questions, 12)
    topology = zoo.attention_topology(uniter, lxmert, clip_model, coca, ids, torch.randn(1, 16, 128))
    n_text, T = int((ids > 0).sum()), ids.shape[1]
    codes = {name.split("\n")[0]: m for name, m in topology.items()}
    assert all(m.shape == (T + 16, T + 16) for m in codes.values())
    assert set(codes["UNITER-style"][:n_text, :n_text + 16].unique().tolist()) <= {zoo.NONE, zoo.JOINT}
    assert (codes["LXMERT"][:n_text, T:] == zoo.CROSS).all() and (codes["CoCa"][:n_text, T:] == zoo.CROSS).all()
    assert (codes["CLIP"][:, T:] == zoo.NONE).all() and (codes["CLIP"][T:, :] == zoo.NONE).all()  # no link between towers


@pytest.mark.parametrize("boxes", [torch.zeros(16, 3), torch.zeros(16), "boxes"])
def test_bad_boxes_are_refused(boxes):
    with pytest.raises(ValueError, match="boxes"):
        zoo.SingleStreamVQA(len(VOCAB), len(ANSWERS), boxes)


def test_topology_needs_one_question(models):
    uniter, lxmert, clip_model, coca = models
    with pytest.raises(ValueError, match="one question"):
        zoo.attention_topology(uniter, lxmert, clip_model, coca, torch.ones(2, 12, dtype=torch.long), torch.randn(2, 16, 128))
