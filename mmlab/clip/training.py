"""The tiny CLIP of notebook 01: its recipe, the training batches, the training run, and its cache entry.

:func:`train_tiny_clip` trains a real ``open_clip.CLIP`` (built by :func:`mmlab.clip.build_clip`) with the contrastive
loss of :mod:`mmlab.clip` on ShapesWorld; :func:`tiny_clip` and :func:`tiny_clip_trained` serve it from the cache
(:mod:`mmlab.cache`) through the same ``load_clip("local-dir:...")`` that loads a hub checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import open_clip
import torch

from mmlab.cache import artefact_dir, cached, keyed
from mmlab.clip.loss import contrastive_loss
from mmlab.clip.model import build_clip, encode, load_clip, save_clip, tokenizer_for
from mmlab.clip.views import flat_colour, grey
from mmlab.clip.zero_shot import zero_shot_accuracy
from mmlab.data import ShapesWorld
from mmlab.settings import device as runtime_device
from mmlab.train import History, train, warmup_cosine


@dataclass(frozen=True)
class TinyClipRecipe:
    """The recipe of the tiny CLIP of notebook 01: architecture, data and training.

    ``model_cfg`` uses open_clip's config schema (``embed_dim``, ``vision_cfg``, ``text_cfg``), so the
    same dict is written to ``open_clip_config.json`` and read back by ``open_clip.create_model``.
    Defaults: open_clip's ModifiedResNet image tower (width 16, one block per stage) and a 1-layer text
    transformer; ~1.3M image-tower parameters, 3.2M in the 49,408-row token embedding.
    """

    embed_dim: int = 64
    vision_cfg: dict = field(default_factory=lambda: {"image_size": 32, "layers": [1, 1, 1, 1], "width": 16})
    text_cfg: dict = field(default_factory=lambda: {"context_length": 16, "width": 64, "heads": 4, "layers": 1, "mlp_ratio": 2.0})
    image_size: int = 32
    num_steps: int = 2600  # held-out generalisation arrives late: fewer steps leave some seeds under the bar
    lr: float = 3e-3
    weight_decay: float = 0.1
    cosine_decay: bool = True  # decay the learning rate to 0 along a cosine (after 5% linear warm-up)
    copies: int = 1  # sub-batches of one-image-per-training-caption per step (no duplicate captions)
    caption_templates: tuple[str, ...] = ("a {color} {shape}", "a {shape} that is {color}", "{color} {shape}",
                                          "the {shape} is {color}")  # one drawn per caption and step
    attribute_batches: bool = True  # add attribute-isolating sub-batches (see attribute_sub_batches())
    shape_batches: int = 4  # grey "a {shape}" sub-batches per step
    seed: int = 0

    @property
    def model_cfg(self) -> dict:
        return {"embed_dim": self.embed_dim, "vision_cfg": dict(self.vision_cfg), "text_cfg": dict(self.text_cfg)}





class MemoTokenizer:
    """A tokenizer that remembers each text's tokens: training re-tokenizes the same few dozen captions every
    step, and open_clip's tokenizer (ftfy + regex + BPE per text) cost ~3 ms of a ~45 ms step.

    Returns exactly what the wrapped tokenizer returns: ``(len(texts), context_length)`` int64 tokens.
    """

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self._rows: dict[str, torch.Tensor] = {}

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        if isinstance(texts, str):
            raise TypeError("texts must be a list of strings, got one str")
        for text in texts:
            if text not in self._rows:
                self._rows[text] = self.tokenizer([text])[0]
        return torch.stack([self._rows[text] for text in texts])  # (N, L), a copy: callers may modify it



def attribute_sub_batches(world: ShapesWorld, tokenizer, seed: int, shape_batches: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Attribute-isolating sub-batches: each names one attribute of images that show only that attribute.

    * ``shape_batches`` times: ``"a {shape}"`` under one *grey* image per shape (colour removed: the shape
      must be read from form, so shape features cannot lean on the colours each shape was seen with);
    * ``"a {color} shape"`` under one *blurred* image per colour (shape removed: a flat colour patch).
    Only training pairs are drawn, so no held-out (colour, shape) pair is ever seen.
    Returns a list of ``(images (n, 3, H, W), tokens (n, L))``, one caption per image, no duplicates.
    """
    g = torch.Generator().manual_seed(seed)
    pairs = world.train_pairs

    def pick(options: list) -> tuple[str, str]:
        return options[torch.randint(len(options), (1,), generator=g).item()]

    out = []
    shape_caps = tokenizer([f"a {s}" for s in world.shapes])
    for k in range(shape_batches):
        chosen = [pick([p for p in pairs if p[1] == s]) for s in world.shapes]
        images = world.sample(len(chosen), "train", seed=seed * 101 + k, pairs=chosen).images
        out.append((grey(images), shape_caps))
    chosen = [pick([p for p in pairs if p[0] == c]) for c in world.colors]
    images = world.sample(len(chosen), "train", seed=seed * 101 + 100, pairs=chosen).images
    out.append((flat_colour(images), tokenizer([f"a {c} shape" for c in world.colors])))
    return out


def train_tiny_clip(config: TinyClipRecipe = TinyClipRecipe(), progress: bool = True, eval_every: int = 250,
                    world: ShapesWorld | None = None, device: torch.device | None = None) -> tuple[open_clip.CLIP, History]:
    """Train the tiny CLIP contrastively on ShapesWorld ``train`` with the shared loop.

    Each batch holds every training caption ``config.copies`` times in separate sub-batches, so no batch has
    two images of one caption (duplicates would be false negatives for the contrastive loss).
    Trains on ``device`` (default ``settings.device()``). Returns the trained model (eval mode) and its
    :class:`History` (evals ``heldout_acc``, ``heldout_acc_composed`` and ``seen_acc`` on 300 images each).
    """
    world = world or ShapesWorld(image_size=config.image_size, seed=0)
    model = build_clip(config.model_cfg, seed=config.seed).to(device or runtime_device())  # batches follow the model
    tokenizer = MemoTokenizer(tokenizer_for(config.model_cfg))  # the same captions every step: tokenize once
    pairs = world.train_pairs
    templates = config.caption_templates

    def batch_fn(step: int):
        seed = config.seed * 1_000_003 + step
        batch = world.sample(len(pairs) * config.copies, "train", seed=seed, pairs=pairs * config.copies)
        which = torch.randint(len(templates), (len(pairs),), generator=torch.Generator().manual_seed(seed))
        captions = tokenizer([templates[k].format(color=c, shape=s) for k, (c, s) in zip(which.tolist(), pairs)])
        if not config.attribute_batches:
            return batch.images, captions, []  # (copies*P, 3, H, W), (P, L): one of each caption
        return batch.images, captions, attribute_sub_batches(world, tokenizer, seed, shape_batches=config.shape_batches)

    def loss_fn(m: open_clip.CLIP, batch) -> torch.Tensor:
        images, captions, aux = batch
        # one forward pass per tower over every sub-batch, then one contrastive problem per sub-batch
        all_images = torch.cat([images] + [a for a, _ in aux])  # (copies*P + aux, 3, H, W)
        all_texts = torch.cat([captions] + [t for _, t in aux])  # (P + aux, L)
        image_features, text_features = encode(m, all_images, all_texts)
        image_sizes = [len(pairs)] * config.copies + [len(a) for a, _ in aux]
        text_sizes = [len(pairs)] + [len(t) for _, t in aux]
        image_chunks = image_features.split(image_sizes)
        text_chunks = text_features.split(text_sizes)
        text_chunks = [text_chunks[0]] * config.copies + list(text_chunks[1:])
        scale = m.logit_scale.exp()
        losses = [contrastive_loss(i, t, scale) for i, t in zip(image_chunks, text_chunks)]
        return torch.stack(losses).mean()

    def eval_fn(m: open_clip.CLIP) -> dict[str, float]:
        return {"heldout_acc": zero_shot_accuracy(m, tokenizer, world, n=300),
                "heldout_acc_composed": zero_shot_accuracy(m, tokenizer, world, n=300, composed=True),
                "seen_acc": zero_shot_accuracy(m, tokenizer, world, n=300, split="train")}

    # fused AdamW: one kernel over all parameters; 1.5x faster steps here, mostly the 3.2M-row token embedding
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay, fused=True)
    scheduler = None
    if config.cosine_decay:
        scheduler = warmup_cosine(optimizer, config.num_steps, warmup=max(1, config.num_steps // 20))
    with torch.random.fork_rng():
        torch.manual_seed(config.seed)
        history = train(model, batch_fn, loss_fn, optimizer, config.num_steps, eval_fn=eval_fn,
                        eval_every=eval_every, lr_scheduler=scheduler, progress=progress, desc="tiny CLIP")
    with torch.no_grad():
        model.logit_scale.clamp_(0, torch.log(torch.tensor(100.0)))
    return model.eval(), history



def clip_recipe(config: TinyClipRecipe) -> dict:
    """Everything that determines the tiny CLIP trained by ``config``: its cache key."""
    return {"recipe": asdict(config), "version": 3, "open_clip": open_clip.__version__, "torch": torch.__version__}


def tiny_clip_dir(config: TinyClipRecipe, device: torch.device | None = None) -> Path:
    """Cache folder of the tiny CLIP trained by ``config`` on ``device`` (keyed by a hash of the recipe, the library
    versions and, off the CPU, the device type: :func:`mmlab.cache.keyed`)."""
    return artefact_dir("tiny_clip", keyed(clip_recipe(config), device))


def tiny_clip_trained(config: TinyClipRecipe, progress: bool = True, eval_every: int = 250,
                      device: torch.device | None = None) -> tuple[open_clip.CLIP, History | None]:
    """Notebook 01's model and its training :class:`History`: trained on the page, or loaded whole from the cache.

    The history (losses, evaluations, seconds) is stored beside the weights, so a second run shows the same curves;
    it is None only for a model cached without one (by an older version of ``tiny_clip()``).
    """
    trained: dict[str, History] = {}

    def build() -> open_clip.CLIP:
        model, trained["history"] = train_tiny_clip(config, progress=progress, eval_every=eval_every, device=device)
        return model

    def save(model: open_clip.CLIP, folder: Path) -> None:
        save_clip(model, config.model_cfg, folder)
        (folder / "history.json").write_text(trained["history"].to_json())

    def load(folder: Path) -> tuple[open_clip.CLIP, History | None]:
        stored = folder / "history.json"  # absent in artefacts cached by tiny_clip(), which keeps no history
        history = trained.get("history") or (History.from_json(stored.read_text()) if stored.is_file() else None)
        return load_clip(f"local-dir:{folder}", device=device)[0], history

    return cached("tiny_clip", clip_recipe(config), build, save, load, device=device)


def tiny_clip(seed: int = 0, retrain: bool = False, progress: bool = True, device: torch.device | None = None,
              recipe: TinyClipRecipe | None = None):
    """The trained tiny CLIP of notebook 01: loaded from the cache, or trained (same recipe, same seed) on ``device``.

    Returns ``(model, preprocess, tokenizer)`` through :func:`load_clip`, exactly as a hub checkpoint.
    ``recipe``: another recipe than notebook 01's (its ``seed`` then wins over ``seed``).
    """
    config = recipe or TinyClipRecipe(seed=seed)
    trained: dict[str, History] = {}

    def build() -> open_clip.CLIP:
        model, trained["history"] = train_tiny_clip(config, progress=progress, device=device)
        return model

    def save(model: open_clip.CLIP, folder: Path) -> None:  # with its history: notebook 01 shows the curves from it
        save_clip(model, config.model_cfg, folder)
        (folder / "history.json").write_text(trained["history"].to_json())

    return cached("tiny_clip", clip_recipe(config), build=build, save=save,
                  load=lambda folder: load_clip(f"local-dir:{folder}", device=device), retrain=retrain, device=device)


