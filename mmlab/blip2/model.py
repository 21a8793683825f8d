"""The tiny ``Blip2ForConditionalGeneration``: the frozen CLIP image tower, assembly, loading, captioning."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import open_clip
import torch
from open_clip.modified_resnet import ModifiedResNet
from torch import nn
from transformers import (
    Blip2Config,
    Blip2ForConditionalGeneration,
    Blip2Processor,
    Blip2VisionConfig,
    OPTForCausalLM,
    PreTrainedTokenizerFast,
)
from transformers.modeling_outputs import BaseModelOutputWithPooling

from mmlab.blip2.processor import IMAGE, pixel_values
from mmlab.blip2.recipe import TinyBlip2Recipe, qformer_config
from mmlab.clip import OPENAI_MEAN, OPENAI_STD, flat_colour, silhouette
from mmlab.settings import device as runtime_device

# ----------------------------------------------------------------------------------------------------------------
# the frozen image encoder: the tiny CLIP's ModifiedResNet, returning a feature map as tokens


VIEWS = ("rgb", "grey", "silhouette", "blur")


def image_views(pixel_values: torch.Tensor, views: Sequence[str], mean: Sequence[float] = OPENAI_MEAN,
                std: Sequence[float] = OPENAI_STD) -> list[torch.Tensor]:
    """Fixed, parameter-free views of normalised images (N, 3, S, S), each returned normalised the same way.

    ``"rgb"``: the image; ``"grey"``: its luminance (channel mean of the un-normalised pixels; colour removed, but
    a colour becomes a brightness, and green's lies inside the background's range); ``"silhouette"``: max - min over
    the channels of the un-normalised pixels (colour removed, the shape kept against the grey background: see
    :func:`mmlab.clip.silhouette`); ``"blur"``: the mean colour of each quarter of the image (shape removed).
    Same sizes as the input.
    """
    unknown = [v for v in views if v not in VIEWS]
    if unknown or not views:
        raise ValueError(f"views must be a non-empty subset of {VIEWS}, got {list(views)}")
    m = torch.tensor(mean, dtype=pixel_values.dtype, device=pixel_values.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=pixel_values.dtype, device=pixel_values.device).view(1, 3, 1, 1)
    out = []
    for view in views:
        if view == "rgb":
            out.append(pixel_values)
        elif view == "grey":
            luminance = (pixel_values * s + m).mean(1, keepdim=True)  # (N, 1, S, S) in [0, 1]
            out.append((luminance - m) / s)
        elif view == "silhouette":
            out.append((silhouette(pixel_values * s + m) - m) / s)  # (N, 3, S, S), from pixels in [0, 1]
        else:
            out.append(flat_colour(pixel_values))  # 2 x 2 blocks: averaging commutes with the per-channel normalisation
    return out


class ClipImageTower(nn.Module):
    """open_clip's ``ModifiedResNet`` cut after stage ``stage``: its feature maps as image tokens for the Q-Former.

    At 32 px the final stage is 1 x 1 (the ResNet downsamples 32x), so the Q-Former cross-attends to an earlier,
    spatial stage: stage 2 gives 4 x 4 = 16 tokens of 8 * width channels per view. With several ``views``
    (see :func:`image_views`) the tokens of each view are concatenated: ``("silhouette", "blur")`` hands the Q-Former
    one colour-free and one shape-free set of tokens of the same frozen encoder. Returns what ``Blip2VisionModel``
    returns (``BaseModelOutputWithPooling``, ``last_hidden_state`` (N, V*G*G, C)), so ``Blip2ForConditionalGeneration``
    uses it unchanged.
    """

    def __init__(self, vision_cfg: dict, embed_dim: int, stage: int = 2, views: Sequence[str] = ("rgb",)) -> None:
        super().__init__()
        if stage not in (1, 2, 3, 4):
            raise ValueError(f"stage must be 1, 2, 3 or 4, got {stage}")
        image_views(torch.zeros(1, 3, 2, 2), views)  # validates views
        self.stage = stage
        self.views = tuple(views)
        width = vision_cfg["width"]
        self.resnet = ModifiedResNet(layers=vision_cfg["layers"], output_dim=embed_dim, heads=width * 32 // 64,
                                     image_size=vision_cfg["image_size"], width=width)
        self.hidden_size = width * 4 * 2 ** (stage - 1)  # bottleneck expansion 4, channels double per stage

    def tokens(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Feature-map tokens (N, G*G, C) of one view (normalised pixels (N, 3, S, S))."""
        x = self.resnet.stem(pixel_values.to(self.resnet.conv1.weight.dtype))  # (N, w, S/4, S/4)
        for layer in (self.resnet.layer1, self.resnet.layer2, self.resnet.layer3, self.resnet.layer4)[: self.stage]:
            x = layer(x)  # (N, C, G, G)
        return x.flatten(2).transpose(1, 2)  # (N, G*G, C)

    def forward(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False, return_dict: bool = True,
                **kwargs) -> BaseModelOutputWithPooling:
        """``pixel_values`` (N, 3, S, S) normalised images, or (N, T, C) tokens this tower already made, which pass
        through: trainings that see the same images again (:class:`mmlab.blip2.Stage2Batches`) run the frozen
        encoder once, and ``Blip2ForConditionalGeneration.forward`` hands ``pixel_values`` to the tower unchanged."""
        if pixel_values.ndim == 3:
            if pixel_values.shape[-1] != self.hidden_size:
                raise ValueError(f"pixel_values as tokens must be (N, T, {self.hidden_size}), got {tuple(pixel_values.shape)}")
            tokens = pixel_values
        elif pixel_values.ndim == 4:
            tokens = torch.cat([self.tokens(v) for v in image_views(pixel_values, self.views)], 1)  # (N, V*G*G, C)
        else:
            raise ValueError(f"pixel_values must be images (N, 3, S, S) or tokens (N, T, C), got {tuple(pixel_values.shape)}")
        return BaseModelOutputWithPooling(last_hidden_state=tokens, pooler_output=tokens.mean(1))


class TinyBlip2ForConditionalGeneration(Blip2ForConditionalGeneration):
    """``Blip2ForConditionalGeneration`` whose image encoder is a :class:`ClipImageTower` (a CNN, not BLIP-2's ViT).

    Everything else (queries, Q-Former, projection, OPT, ``forward``, ``generate``, ``save_pretrained``,
    ``from_pretrained``) is the transformers class; the tower's open_clip config is stored in ``config.clip_vision``.
    """

    def __init__(self, config: Blip2Config) -> None:
        super().__init__(config)
        spec = config.clip_vision
        self.vision_model = ClipImageTower(spec["vision_cfg"], spec["embed_dim"], spec["stage"], spec["views"])


def load_blip2(name_or_path: str | Path, dtype: torch.dtype = torch.float32,
               device: torch.device | None = None) -> tuple[Blip2ForConditionalGeneration, Blip2Processor]:
    """Load a BLIP-2 model and processor: ``"Salesforce/blip2-opt-2.7b"`` on the pretrained path, or a folder written
    by :func:`save_blip2`. Safetensors only; the class comes from the config (no remote code).
    """
    config = Blip2Config.from_pretrained(name_or_path)
    cls = TinyBlip2ForConditionalGeneration if getattr(config, "clip_vision", None) else Blip2ForConditionalGeneration
    model = cls.from_pretrained(name_or_path, dtype=dtype, use_safetensors=True).to(device or runtime_device()).eval()
    processor = Blip2Processor.from_pretrained(name_or_path)
    return model, processor


def save_blip2(model: Blip2ForConditionalGeneration, processor: Blip2Processor, directory: str | Path) -> Path:
    """``save_pretrained`` of model (safetensors) and processor into ``directory``."""
    directory = Path(directory)
    model.save_pretrained(directory, safe_serialization=True)
    processor.save_pretrained(directory)
    return directory


def build_blip2(config: TinyBlip2Recipe, clip_model: open_clip.CLIP, clip_cfg: dict, language_model: OPTForCausalLM,
                tokenizer: PreTrainedTokenizerFast, device: torch.device | None = None) -> TinyBlip2ForConditionalGeneration:
    """Assemble the tiny BLIP-2: CLIP tower weights and LM weights carried in, queries initialised N(0, 0.02).

    ``clip_cfg`` is the open_clip ``model_cfg`` of ``clip_model`` (``TinyClipRecipe().model_cfg``).
    Freezes the image encoder and the LM (``requires_grad=False``, eval mode); queries, Q-Former and projection train.
    The model is placed on ``device`` (default ``settings.device()``).
    """
    vision_cfg, embed_dim = clip_cfg["vision_cfg"], clip_cfg["embed_dim"]  # open_clip's model_cfg of the tiny CLIP
    tower = ClipImageTower(vision_cfg, embed_dim, config.feature_stage, config.views)
    enc = tower.hidden_size
    blip_config = Blip2Config(
        vision_config=Blip2VisionConfig(hidden_size=enc, intermediate_size=enc, num_hidden_layers=0, num_attention_heads=1,
                                        image_size=config.image_size, patch_size=config.image_size).to_dict(),
        qformer_config=qformer_config(config, enc, len(tokenizer)).to_dict(),
        text_config=language_model.config.to_dict(),
        num_query_tokens=config.num_query_tokens,
        image_token_index=IMAGE,
    )
    blip_config.clip_vision = {"vision_cfg": vision_cfg, "embed_dim": embed_dim, "stage": config.feature_stage,
                               "views": list(config.views)}
    with torch.random.fork_rng():
        torch.manual_seed(config.seed)
        model = TinyBlip2ForConditionalGeneration(blip_config)
    model.vision_model.resnet.load_state_dict(clip_model.visual.state_dict())
    model.language_model.load_state_dict(language_model.state_dict())
    with torch.no_grad():
        # N(0, 0.02) as BLIP-2 initialises them (transformers zero-inits: its weights come from a checkpoint)
        g = torch.Generator().manual_seed(config.seed)
        model.query_tokens.copy_(torch.randn(model.query_tokens.shape, generator=g) * 0.02)
    for module in (model.vision_model, model.language_model):
        module.requires_grad_(False)
    return model.to(device or runtime_device()).eval()


# ----------------------------------------------------------------------------------------------------------------
# stage 2: generative learning through the frozen LM, and captioning


def trainable_parameters(model: Blip2ForConditionalGeneration) -> list[nn.Parameter]:
    """The parameters BLIP-2 trains in stage 2: ``query_tokens``, the Q-Former and ``language_projection``."""
    return [model.query_tokens, *model.qformer.parameters(), *model.language_projection.parameters()]


def caption(model: Blip2ForConditionalGeneration, processor: Blip2Processor, images: torch.Tensor,
            max_new_tokens: int = 6, batch_size: int = 256) -> list[str]:
    """Greedy captions of ``images`` ((N, 3, H, W) floats in [0, 1], as ShapesWorld makes them).

    ``generate(pixel_values=...)`` builds the prefix (K image tokens + ``<s>``) itself; returns N stripped strings.
    """
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}")
    pixels = pixel_values(processor, images)  # checks images
    device = next(model.parameters()).device
    dtype = model.language_projection.weight.dtype
    out = []
    with torch.no_grad():
        for chunk in pixels.split(batch_size):
            ids = model.generate(pixel_values=chunk.to(device, dtype), max_new_tokens=max_new_tokens, do_sample=False)
            out += [t.strip() for t in processor.tokenizer.batch_decode(ids, skip_special_tokens=True)]
    return out


def exact_match(predicted: Sequence[str], captions: Sequence[str]) -> float:
    """Fraction of predicted captions equal to the reference caption (after stripping spaces)."""
    if len(predicted) != len(captions) or not captions:
        raise ValueError(f"need as many predictions as captions (> 0), got {len(predicted)} and {len(captions)}")
    return sum(p.strip() == c.strip() for p, c in zip(predicted, captions)) / len(captions)


