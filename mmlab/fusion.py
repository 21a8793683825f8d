"""Fused image+text classifiers with a *planted* modality reliance, for checking attribution methods.

A planted task draws a ShapesWorld image and a short text hint "the hint is {color}", each with its own colour,
and sets the label (one of the colours) by a known rule:

* ``"image"``: the label is the image's colour (the hint is noise);
* ``"text"``: the label is the hint's colour (the image is noise);
* ``"mixed"``: the image's colour with probability ``image_weight`` (0.7), else the hint's;
* ``"redundant"``: image and hint always show the same colour, which is the label.

Text is given as one-hot tokens (N, L, V) so that a missing token is the zero vector and gradients exist.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mmlab.data import ShapesWorld
from mmlab.train import History, train

TASKS = ("image", "text", "mixed", "redundant")
PREFIX = ("the", "hint", "is")


@dataclass(frozen=True)
class PlantedTask:
    """A planted dataset: ``inputs`` {"image": (N, 3, H, W), "text": (N, L, V)}, ``labels`` (N,), the truth."""

    name: str
    inputs: dict[str, torch.Tensor]
    labels: torch.Tensor
    image_colors: torch.Tensor  # (N,) colour index shown in the image
    text_colors: torch.Tensor  # (N,) colour index named by the hint
    image_weight: float  # the planted share of the image: 1, 0, 0.7 (mixed) or 0.5 (redundant: either suffices)
    vocab: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, idx: torch.Tensor | slice) -> PlantedTask:
        return PlantedTask(self.name, {k: v[idx] for k, v in self.inputs.items()}, self.labels[idx],
                           self.image_colors[idx], self.text_colors[idx], self.image_weight, self.vocab)

    @property
    def device(self) -> torch.device:
        return self.labels.device

    def to(self, device: torch.device | str) -> PlantedTask:
        """The same task with every tensor on ``device``."""
        return PlantedTask(self.name, {k: v.to(device) for k, v in self.inputs.items()}, self.labels.to(device),
                           self.image_colors.to(device), self.text_colors.to(device), self.image_weight, self.vocab)


def planted_task(name: str, n: int, world: ShapesWorld, seed: int = 0, image_weight: float = 0.7) -> PlantedTask:
    """Draw ``n`` samples of the planted task ``name`` ("image", "text", "mixed" or "redundant").

    Args:
        world: the ShapesWorld whose images (any split) carry the image colour.
        image_weight: for "mixed", the probability that the label follows the image.
    """
    if name not in TASKS:
        raise ValueError(f"name must be one of {TASKS}, got {name!r}")
    if not 0 <= image_weight <= 1:
        raise ValueError(f"image_weight must lie in [0, 1], got {image_weight}")
    g = torch.Generator().manual_seed(seed)
    C = len(world.colors)
    batch = world.sample(n, "all", seed=seed)
    image_colors = torch.tensor([world.colors.index(c) for c in batch.colors])
    text_colors = image_colors.clone() if name == "redundant" else torch.randint(C, (n,), generator=g)
    follow_image = {"image": torch.ones(n, dtype=torch.bool), "text": torch.zeros(n, dtype=torch.bool),
                    "redundant": torch.ones(n, dtype=torch.bool),
                    "mixed": torch.rand(n, generator=g) < image_weight}[name]
    labels = torch.where(follow_image, image_colors, text_colors)
    vocab = PREFIX + tuple(world.colors)
    ids = torch.cat([torch.arange(len(PREFIX)).expand(n, -1), (len(PREFIX) + text_colors)[:, None]], 1)  # (N, L)
    text = F.one_hot(ids, len(vocab)).float()  # (N, L, V)
    weight = {"image": 1.0, "text": 0.0, "mixed": image_weight, "redundant": 0.5}[name]
    return PlantedTask(name, {"image": batch.images, "text": text}, labels, image_colors, text_colors, weight, vocab)


class FusionClassifier(torch.nn.Module):
    """A small image+text classifier; ``fusion="early"`` concatenates features, ``"late"`` adds per-modality logits.

    forward(inputs) takes {"image": (N, 3, H, W), "text": (N, L, V)} and returns logits (N, K).
    """

    def __init__(self, num_classes: int, vocab_size: int, text_length: int = 4, fusion: str = "early", width: int = 32):
        super().__init__()
        if fusion not in ("early", "late"):
            raise ValueError(f"fusion must be 'early' or 'late', got {fusion!r}")
        self.fusion = fusion
        self.image_encoder = torch.nn.Sequential(
            torch.nn.Conv2d(3, 16, 5, stride=2, padding=2), torch.nn.ReLU(),
            torch.nn.Conv2d(16, width, 3, stride=2, padding=1), torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())  # (N, width)
        self.token_embedding = torch.nn.Linear(vocab_size, 16, bias=False)  # one-hot (N, L, V) -> (N, L, 16)
        self.text_encoder = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16 * text_length, width), torch.nn.ReLU())
        if fusion == "early":
            self.head = torch.nn.Sequential(torch.nn.Linear(2 * width, 64), torch.nn.ReLU(), torch.nn.Linear(64, num_classes))
        else:
            self.image_head = torch.nn.Linear(width, num_classes)
            self.text_head = torch.nn.Linear(width, num_classes)

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        image_features = self.image_encoder(inputs["image"])  # (N, width)
        text_features = self.text_encoder(self.token_embedding(inputs["text"]))  # (N, width)
        if self.fusion == "early":
            return self.head(torch.cat([image_features, text_features], 1))  # (N, K)
        return self.image_head(image_features) + self.text_head(text_features)  # (N, K): a product of experts


def train_fusion(task: PlantedTask, fusion: str, num_steps: int = 400, batch_size: int = 128, seed: int = 0,
                 progress: bool = False, device: torch.device | None = None) -> tuple[FusionClassifier, History]:
    """Train a :class:`FusionClassifier` on ``task`` with cross-entropy (the shared loop, seeded).

    ``device``: where the model trains (default: where ``task``'s tensors are; see :meth:`PlantedTask.to`).
    """
    torch.manual_seed(seed)
    device = torch.device(device) if device is not None else task.device
    task = task.to(device)
    num_classes = len(task.vocab) - len(PREFIX)  # one class per colour
    model = FusionClassifier(num_classes, len(task.vocab), task.inputs["text"].shape[1], fusion).to(device)
    n = len(task)

    def batch_fn(step: int) -> PlantedTask:
        idx = torch.randint(n, (batch_size,), generator=torch.Generator().manual_seed(seed * 100_003 + step))
        return task.subset(idx.to(device))  # indices drawn on the CPU: the same batches on every device

    def loss_fn(m: FusionClassifier, b: PlantedTask) -> torch.Tensor:
        return F.cross_entropy(m(b.inputs), b.labels)

    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3, foreach=True)
    history = train(model, batch_fn, loss_fn, optimizer, num_steps, progress=progress, desc=f"{task.name}/{fusion}")
    return model.eval(), history
