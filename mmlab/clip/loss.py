"""CLIP's contrastive loss (Radford et al. 2021) and SigLIP's pairwise sigmoid loss (Zhai et al. 2023), from scratch.

Both equal open_clip's ``ClipLoss`` / ``SigLipLoss`` on the same inputs (``tests/test_clip.py``); notebook 01 prints them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _check_features(image_features: torch.Tensor, text_features: torch.Tensor) -> None:
    """Both (B, D) float tensors of one shape, B >= 1, all finite: else a ValueError naming the argument.

    Finiteness is checked on the CPU only: on a GPU it would wait for the device at every training step; there a
    non-finite feature gives a non-finite loss, which ``mmlab.train.train`` reports with its step."""
    for name, x in (("image_features", image_features), ("text_features", text_features)):
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise TypeError(f"{name} must be a float tensor (B, D), got {type(x).__name__}")
        if x.ndim != 2 or x.shape[0] == 0:
            raise ValueError(f"{name} must be (B, D) with B >= 1, got shape {tuple(x.shape)}")
        if x.device.type == "cpu" and not torch.isfinite(x).all():
            raise ValueError(f"{name} holds NaN or infinite values")
    if image_features.shape != text_features.shape:
        raise ValueError(f"image_features and text_features must be (B, D) of one shape, got "
                         f"{tuple(image_features.shape)} and {tuple(text_features.shape)}")


def contrastive_loss(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor | float) -> torch.Tensor:
    """Symmetric InfoNCE loss of CLIP (Radford et al. 2021, Fig. 3 pseudocode).

    Args:
        image_features: (B, D) L2-normalised image embeddings.
        text_features: (B, D) L2-normalised text embeddings; row i is the caption of image i.
        logit_scale: the inverse temperature 1/τ, already exponentiated (open_clip's ``model.logit_scale.exp()``).
    Returns:
        Scalar: mean of the image->text and text->image cross-entropies over the (B, B) similarity matrix.
    """
    _check_features(image_features, text_features)
    logits_per_image = logit_scale * image_features @ text_features.T  # (B, B)
    labels = torch.arange(image_features.shape[0], device=image_features.device)  # matching pairs on the diagonal
    return (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_image.T, labels)) / 2


def siglip_loss(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor | float,
                logit_bias: torch.Tensor | float) -> torch.Tensor:
    """SigLIP's pairwise sigmoid loss (Zhai et al. 2023): every (image, text) pair is its own binary problem.

    No softmax over the batch: the B diagonal pairs are positives (label +1), the B² − B others negatives (−1), each
    scored by ``logit_scale * cos + logit_bias`` (SigLIP initialises the scale at 10 and the bias at −10, so the
    many negatives start near a probability of 0). Summed over pairs, divided by B, as open_clip's ``SigLipLoss``.
    """
    _check_features(image_features, text_features)
    logits = logit_scale * image_features @ text_features.T + logit_bias  # (B, B)
    labels = 2 * torch.eye(len(logits), device=logits.device, dtype=logits.dtype) - 1  # +1 on the diagonal, −1 elsewhere
    return -F.logsigmoid(labels * logits).sum() / len(logits)
