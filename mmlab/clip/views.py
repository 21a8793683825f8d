"""Hand-made views of a ShapesWorld image that keep one attribute: a toy-only device of notebooks 01 and 02.

Real CLIP sees web images as they are; these views exist because the toy's attributes can be separated by hand
(notebook 01's boxed "toy only" note says what the real model does instead).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def grey(images: torch.Tensor) -> torch.Tensor:
    """Colour removed: each pixel's channel mean, repeated over the 3 channels ((N, 3, H, W) -> same shape)."""
    return images.mean(1, keepdim=True).expand(-1, 3, -1, -1).contiguous()


def silhouette(images: torch.Tensor) -> torch.Tensor:
    """Colour removed, shape kept: max - min over the channels, repeated over the 3 channels ((N, 3, H, W) -> same shape).

    Unlike :func:`grey` it does not turn a colour into a brightness that can match the background: ShapesWorld's
    background is grey (max - min ~ 0) and every colour of its palette is saturated (max - min 0.65-0.85), while
    green's channel mean (0.33) lies inside the background's range (0-0.35).
    """
    chroma = images.amax(1, keepdim=True) - images.amin(1, keepdim=True)  # (N, 1, H, W): ~0 where the pixel is grey
    return chroma.expand(-1, 3, -1, -1)


def flat_colour(images: torch.Tensor) -> torch.Tensor:
    """Shape removed: the mean colour of each quarter of the image, as 2 x 2 blocks ((N, 3, H, W) -> same shape)."""
    return F.interpolate(F.avg_pool2d(images, images.shape[-1] // 2), size=images.shape[-2:])
