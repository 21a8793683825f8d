"""A judge for generated ShapesWorld images: a small CNN trained on real images to read colour and shape.

Generative models here (notebook 01's toy DALL·E, notebook 05's latent diffusion) are scored by what this judge reads
in their samples. A toy-only device: real text-to-image models are evaluated with FID, CLIP score and human raters.
The judge's own accuracy on fresh real images is printed beside every score it gives, because its errors are part of
those scores.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from mmlab.data import ShapesWorld
from mmlab.settings import device as default_device
from mmlab.train import train


def build_judge(num_colors: int, num_shapes: int) -> torch.nn.Sequential:
    """Two conv blocks and a linear head over 32 x 32 images: ``num_colors`` colour logits, then ``num_shapes`` shape
    logits. Initialised from torch's global RNG (seed it, or call :func:`train_judge` with a seed)."""
    return torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                               torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                               torch.nn.Flatten(), torch.nn.Linear(32 * 64, num_colors + num_shapes))


def attribute_batch(world: ShapesWorld, step: int, batch_size: int = 128):
    """Real images of every pair with their colour and shape indices: ``(images, colours, shapes)``."""
    b = world.sample(batch_size, "all", seed=30_000 + step)
    return (b.images, torch.tensor([world.colors.index(c) for c in b.colors]),
            torch.tensor([world.shapes.index(s) for s in b.shapes]))


def train_judge(world: ShapesWorld, num_steps: int = 400, lr: float = 3e-3, device: torch.device | None = None,
                seed: int | None = None, progress: bool = False) -> torch.nn.Sequential:
    """Train the judge on real images of all 24 pairs (an instrument, not a model under test: it sees every pair).

    ``seed``: initialise from it (the RNG state outside is left as it was); None: from torch's global RNG.
    """
    num_colors = len(world.colors)

    def loss_fn(model, batch):
        out = model(batch[0])  # (B, colours + shapes)
        return F.cross_entropy(out[:, :num_colors], batch[1]) + F.cross_entropy(out[:, num_colors:], batch[2])

    with torch.random.fork_rng(enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        judge = build_judge(num_colors, len(world.shapes)).to(device if device is not None else default_device())
        train(judge, lambda step: attribute_batch(world, step), loss_fn,
              torch.optim.Adam(judge.parameters(), lr=lr, foreach=True), num_steps, progress=progress, desc="judge")
    return judge.eval()


def read_attributes(judge: torch.nn.Module, images: torch.Tensor, num_colors: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The colour and shape indices the judge reads in (N, 3, 32, 32) images in [0, 1]."""
    device = next(judge.parameters()).device
    with torch.no_grad():
        out = judge(images.to(device))
    return out[:, :num_colors].argmax(1), out[:, num_colors:].argmax(1)


def judged(judge: torch.nn.Module, world: ShapesWorld, images: torch.Tensor,
           pairs: Sequence[tuple[str, str]]) -> dict[str, float]:
    """Fractions of ``images`` whose colour, shape, and both, the judge reads as the ``pairs`` asked for."""
    colour, shape = read_attributes(judge, images, len(world.colors))
    want_c = torch.tensor([world.colors.index(c) for c, _ in pairs], device=colour.device)
    want_s = torch.tensor([world.shapes.index(s) for _, s in pairs], device=colour.device)
    return {"colour": (colour == want_c).float().mean().item(), "shape": (shape == want_s).float().mean().item(),
            "both": ((colour == want_c) & (shape == want_s)).float().mean().item()}
