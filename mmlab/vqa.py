"""VQA-style questions about two-object ShapesWorld scenes, a word-level vocabulary, and patch "region" features.

Questions (answers in parentheses):
* ``"what color is the {shape} ?"`` (one of the colours) — needs the colour bound to the named shape;
* ``"is the {color} shape {relation} the {color2} shape ?"`` (``yes``/``no``) — needs the spatial relation.

UNITER and LXMERT were trained on Faster R-CNN region features (36 boxes with positions). Here the frozen
tiny CLIP's convolutional feature map stands in: :func:`patch_features` returns one feature per grid cell and
:func:`patch_boxes` its box, so a model sees "regions" with positions as those models did.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from mmlab.data import RELATIONS, Batch, ShapesWorld

SPECIALS = ("[PAD]", "[CLS]", "[SEP]", "[UNK]")
YES_NO = ("yes", "no")


class WordVocab:
    """A word-level vocabulary: ids 0..3 are [PAD], [CLS], [SEP], [UNK]; words are split on spaces."""

    def __init__(self, words: Sequence[str]) -> None:
        self.itos = list(SPECIALS) + sorted(set(words) - set(SPECIALS))
        self.stoi = {w: i for i, w in enumerate(self.itos)}
        self.pad_id, self.cls_id, self.sep_id, self.unk_id = 0, 1, 2, 3

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, texts: Sequence[str], length: int, cls: bool = True) -> torch.Tensor:
        """(B, length) ids: optional [CLS], the words, [SEP], then [PAD]s. Raises if a text is too long."""
        if isinstance(texts, str):
            raise TypeError("texts must be a sequence of strings, not a single string")
        rows = []
        for text in texts:
            ids = ([self.cls_id] if cls else []) + [self.stoi.get(w, self.unk_id) for w in text.split()] + [self.sep_id]
            if len(ids) > length:
                raise ValueError(f"text {text!r} needs {len(ids)} tokens, more than length={length}")
            rows.append(ids + [self.pad_id] * (length - len(ids)))
        return torch.tensor(rows, dtype=torch.long)

    def decode(self, ids: torch.Tensor) -> list[str]:
        """Words of each row, without special tokens."""
        return [" ".join(self.itos[i] for i in row.tolist() if i >= len(SPECIALS)) for row in ids]


@dataclass(frozen=True)
class VQABatch:
    """Scenes with one question each: ``images`` (N, 3, H, W), ``questions``, ``answers`` (strings),
    ``answer_ids`` (N,) indices into the answer list, ``kinds`` ("color" or "relation"), and the scenes."""

    images: torch.Tensor
    questions: list[str]
    answers: list[str]
    answer_ids: torch.Tensor
    kinds: list[str]
    scenes: Batch

    def __len__(self) -> int:
        return len(self.questions)


def answer_space(world: ShapesWorld) -> list[str]:
    """All answers: the world's colours, then "yes", "no"."""
    return list(world.colors) + list(YES_NO)


def question_vocab(world: ShapesWorld) -> WordVocab:
    """Every word a question or caption of ``world`` can use."""
    words = ["what", "color", "is", "the", "shape", "?", "a", "and"] + list(world.colors) + list(world.shapes)
    words += [w for r in RELATIONS for w in r.split()] + list(YES_NO)
    return WordVocab(words)


_OPPOSITE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}


def vqa_batch(world: ShapesWorld, n: int, split: str = "all", seed: int = 0) -> VQABatch:
    """Draw ``n`` two-object scenes and one question each (half colour, half relation; relation answers balanced).

    Args:
        world: a ShapesWorld with ``scene="pair"`` and relations among "left of", "right of", "above", "below".
    """
    if world.scene != "pair":
        raise ValueError(f"world must have scene='pair' for two-object questions, got scene={world.scene!r}")
    if any(r not in _OPPOSITE for r in world.relations):
        raise ValueError(f"world.relations must be spatial {tuple(_OPPOSITE)}, got {world.relations}")
    scenes = world.sample(n, split, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    kinds_r = torch.rand(n, generator=g) < 0.5
    pick = torch.rand(n, generator=g)
    answers_list = answer_space(world)
    questions, answers, kinds = [], [], []
    for i in range(n):
        c1, s1, c2, s2, rel = scenes.colors[i], scenes.shapes[i], scenes.colors2[i], scenes.shapes2[i], scenes.relations[i]
        if not kinds_r[i]:
            first = pick[i] < 0.5  # ask about either object
            questions.append(f"what color is the {s1 if first else s2} ?")
            answers.append(c1 if first else c2)
            kinds.append("color")
        else:
            # a true statement, its order swapped, or the opposite relation: yes / yes / no / no
            k = int(pick[i] * 4)
            a, b, r = (c1, c2, rel) if k in (0, 2) else (c2, c1, _OPPOSITE[rel])
            if k >= 2:
                r = _OPPOSITE[r]
            questions.append(f"is the {a} shape {r} the {b} shape ?")
            answers.append("yes" if k < 2 else "no")
            kinds.append("relation")
    answer_ids = torch.tensor([answers_list.index(a) for a in answers])
    return VQABatch(scenes.images, questions, answers, answer_ids, kinds, scenes)


def patch_features(clip_model, images: torch.Tensor) -> torch.Tensor:
    """Frozen "region" features from a CLIP ModifiedResNet tower: the stage-2 feature map as tokens.

    Args:
        clip_model: an ``open_clip.CLIP`` whose ``visual`` is a ``ModifiedResNet`` (the tiny CLIP of notebook 01).
        images: (N, 3, H, W) in [0, 1].
    Returns:
        (N, G*G, C) features, one per cell of the G x G map (G = H/8 at stage 2; 4x4 x 128 for 32 px, width 16).
    """
    from mmlab.clip import preprocess_tensors

    visual = clip_model.visual
    if not hasattr(visual, "layer2") or not hasattr(visual, "stem"):
        raise TypeError(f"patch_features needs a ModifiedResNet image tower, got {type(visual).__name__}")
    with torch.no_grad():
        x = preprocess_tensors(clip_model, images.to(visual.conv1.weight.device)).to(visual.conv1.weight.dtype)
        x = visual.layer2(visual.layer1(visual.stem(x)))  # (N, C, G, G)
    return x.flatten(2).transpose(1, 2).contiguous()  # (N, G*G, C)


def patch_boxes(grid: int) -> torch.Tensor:
    """Normalised boxes (x1, y1, x2, y2) of a grid x grid tiling, row-major: (grid*grid, 4)."""
    if grid < 1:
        raise ValueError(f"grid must be >= 1, got {grid}")
    edges = torch.arange(grid + 1, dtype=torch.float32) / grid
    ys, xs = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    return torch.stack([edges[xs], edges[ys], edges[xs + 1], edges[ys + 1]], -1).view(-1, 4)
