"""Data every notebook shares: the synthetic *shapes world*, sklearn's digits and bundled real photos.

Nothing here downloads: ShapesWorld is drawn with NumPy, the digits ship with scikit-learn and the
photos with scikit-image / scikit-learn.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

COLORS: dict[str, tuple[float, float, float]] = {
    "red": (0.90, 0.10, 0.10),
    "green": (0.10, 0.75, 0.15),
    "blue": (0.15, 0.25, 0.95),
    "yellow": (0.95, 0.90, 0.10),
    "purple": (0.60, 0.15, 0.80),
    "cyan": (0.10, 0.85, 0.90),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
SPLITS: tuple[str, ...] = ("train", "heldout", "all")
_CHUNK = 2048  # images drawn per vectorised chunk (bounds transient memory)


@dataclass(frozen=True)
class Batch:
    """A batch of captioned shapes-world images.

    Attributes:
        images: float32 tensor (N, 3, H, W) in [0, 1].
        captions: N strings, e.g. ``"a red circle"``.
        colors, shapes: the (first) object's colour and shape names.
        sizes: ``"small"`` or ``"large"`` per image (first object).
        positions: ``"left"`` or ``"right"`` half of the image (first object's centre).
        centers: float tensor (N, 2) of the first object's (x, y) centre in pixels.
        colors2, shapes2, relations: the second object and the relation of the first to it
            (``scene="pair"`` only, else ``None``).
    """

    images: torch.Tensor
    captions: list[str]
    colors: list[str]
    shapes: list[str]
    sizes: list[str]
    positions: list[str]
    centers: torch.Tensor
    colors2: list[str] | None = None
    shapes2: list[str] | None = None
    relations: list[str] | None = None

    def __len__(self) -> int:
        return len(self.captions)


class ShapesWorld:
    """A deterministic world of captioned images: coloured shapes on a noisy background.

    Args:
        image_size: side H = W of the square images in pixels (>= 16; >= 24 for ``scene="pair"``).
        seed: fixes which (colour, shape) pairs are held out.
        colors: colour names to use, a subset of ``mmlab.data.COLORS`` (at least 2).
        shapes: shape names to use, a subset of ``mmlab.data.SHAPES`` (at least 2).
        scene: ``"single"`` (one object, caption ``"a {color} {shape}"``) or ``"pair"`` (two objects,
            caption ``"a {color} {shape} {relation} a {color2} {shape2}"``).
        size_words: prefix ``small``/``large`` to the shape (``"a small red circle"``).
        position_words: append ``"on the left"``/``"on the right"`` (``scene="single"`` only).
        relations: relation words for ``scene="pair"``; ``"and"`` places the objects side by side.
        noise: standard deviation of the per-pixel Gaussian noise.

    Each colour has one held-out shape (``heldout_pairs``); those pairs never appear in ``split="train"``
    and are the only pairs in ``split="heldout"``: the compositional zero-shot split.
    """

    def __init__(
        self,
        image_size: int = 32,
        seed: int = 0,
        colors: Sequence[str] | None = None,
        shapes: Sequence[str] | None = None,
        scene: str = "single",
        size_words: bool = False,
        position_words: bool = False,
        relations: Sequence[str] = RELATIONS,
        noise: float = 0.05,
    ) -> None:
        if not isinstance(image_size, int) or isinstance(image_size, bool):
            raise TypeError(f"image_size must be an int, got {type(image_size).__name__}")
        if scene not in ("single", "pair"):
            raise ValueError(f"scene must be 'single' or 'pair', got {scene!r}")
        min_size = 16 if scene == "single" else 24
        if image_size < min_size:
            raise ValueError(f"image_size must be >= {min_size} to draw {scene!r} scenes, got {image_size}")
        colors = list(COLORS) if colors is None else list(colors)
        shapes = list(SHAPES) if shapes is None else list(shapes)
        for name, values, known in (("colors", colors, list(COLORS)), ("shapes", shapes, list(SHAPES))):
            unknown = [v for v in values if v not in known]
            if unknown:
                raise ValueError(f"{name} has unknown entries {unknown}; expected a subset of {known}")
            if len(set(values)) != len(values) or len(values) < 2:
                raise ValueError(f"{name} must hold at least 2 distinct names, got {values}")
        bad_rel = [r for r in relations if r not in (*RELATIONS, "and")]
        if not relations or bad_rel:
            raise ValueError(f"relations must be a non-empty subset of {(*RELATIONS, 'and')}, got {list(relations)}")
        if position_words and scene == "pair":
            raise ValueError("position_words applies to scene='single' only")
        if not noise >= 0:
            raise ValueError(f"noise must be >= 0, got {noise}")
        self.image_size = image_size
        self.seed = seed
        self.colors = colors
        self.shapes = shapes
        self.scene = scene
        self.size_words = size_words
        self.position_words = position_words
        self.relations = list(relations)
        self.noise = float(noise)
        # One held-out shape per colour, cycling through a seeded permutation of the shapes.
        perm = np.random.default_rng(seed).permutation(len(shapes))
        self.heldout_pairs: list[tuple[str, str]] = [
            (c, shapes[perm[i % len(shapes)]]) for i, c in enumerate(colors)
        ]
        self.pairs: list[tuple[str, str]] = [(c, s) for c in colors for s in shapes]
        self.train_pairs: list[tuple[str, str]] = [p for p in self.pairs if p not in self.heldout_pairs]

    def __repr__(self) -> str:
        return (
            f"ShapesWorld(image_size={self.image_size}, seed={self.seed}, scene={self.scene!r}, "
            f"{len(self.colors)} colors x {len(self.shapes)} shapes, {len(self.heldout_pairs)} held-out pairs)"
        )

    def split_pairs(self, split: str) -> list[tuple[str, str]]:
        """The (colour, shape) pairs allowed in ``split`` ("train", "heldout" or "all")."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        return {"train": self.train_pairs, "heldout": self.heldout_pairs, "all": self.pairs}[split]

    def sample(
        self,
        n: int,
        split: str = "train",
        seed: int = 0,
        pairs: Sequence[tuple[str, str]] | None = None,
    ) -> Batch:
        """Draw ``n`` captioned images; the same arguments always give the same batch.

        Args:
            n: number of images (>= 0).
            split: which (colour, shape) pairs may appear: "train", "heldout" or "all".
            seed: seed of this batch (positions, sizes, noise, which pairs).
            pairs: optional list of exactly ``n`` (colour, shape) pairs for the (first) objects,
                e.g. one of each caption; each must belong to ``split``.
        Returns:
            A :class:`Batch` with ``images`` (n, 3, H, W) float32 in [0, 1].
        """
        if not isinstance(n, int) or isinstance(n, bool):
            raise TypeError(f"n must be an int, got {type(n).__name__}")
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        allowed = self.split_pairs(split)
        rng = np.random.default_rng([self.seed, seed])
        if pairs is not None:
            pairs = list(pairs)
            if len(pairs) != n:
                raise ValueError(f"pairs must hold n={n} (colour, shape) pairs, got {len(pairs)}")
            outside = [p for p in pairs if tuple(p) not in allowed]
            if outside:
                raise ValueError(f"pairs {outside[:3]} are not in split={split!r}")
            idx = np.array([allowed.index(tuple(p)) for p in pairs], dtype=np.int64)
        else:
            idx = rng.integers(len(allowed), size=n)
        first = [allowed[i] for i in idx]
        S = self.image_size
        large = rng.random(n) < 0.5
        if self.scene == "single":
            # radius as a fraction of the image side: small in [0.17, 0.24], large in [0.29, 0.36]
            r = np.where(large, rng.uniform(0.29, 0.36, n), rng.uniform(0.17, 0.24, n)) * S
            if self.position_words:
                left = rng.random(n) < 0.5
                lo = np.where(left, r, 0.55 * S)
                hi = np.where(left, 0.45 * S, S - r)
                cx = lo + rng.random(n) * np.maximum(hi - lo, 0.0)
            else:
                cx = r + rng.random(n) * (S - 2 * r)
            cy = r + rng.random(n) * (S - 2 * r)
            objects = [(first, cx, cy, r)]
            second = relations = None
        else:
            r = np.where(large, rng.uniform(0.17, 0.21, n), rng.uniform(0.12, 0.15, n)) * S
            r2 = rng.uniform(0.12, 0.21, n) * S
            # second object: a different colour and a different shape, also from the split
            second = []
            for c, s in first:
                options = [p for p in allowed if p[0] != c and p[1] != s]
                if not options:
                    raise ValueError(f"split={split!r} has no pair to put beside ({c}, {s})")
                second.append(options[rng.integers(len(options))])
            relations = [self.relations[i] for i in rng.integers(len(self.relations), size=n)]
            rel = np.array(relations)
            horizontal = np.isin(rel, ["left of", "right of", "and"])
            a_first = (rel == "left of") | (rel == "above") | ((rel == "and") & (rng.random(n) < 0.5))
            rm = np.maximum(r, r2)
            # along the relation axis: one object in each half; across it: anywhere
            u_a = rm + rng.random(n) * np.maximum(0.5 * S - 1 - 2 * rm, 0.0)  # in the first half
            u_b = 0.5 * S + 1 + rm + rng.random(n) * np.maximum(0.5 * S - 1 - 2 * rm, 0.0)
            along1 = np.where(a_first, u_a, u_b)
            along2 = np.where(a_first, u_b, u_a)
            across1 = rm + rng.random(n) * (S - 2 * rm)
            across2 = rm + rng.random(n) * (S - 2 * rm)
            cx = np.where(horizontal, along1, across1)
            cy = np.where(horizontal, across1, along1)
            cx2 = np.where(horizontal, along2, across2)
            cy2 = np.where(horizontal, across2, along2)
            objects = [(first, cx, cy, r), (second, cx2, cy2, r2)]
        images = self._render(objects, n, rng)
        sizes = ["large" if b else "small" for b in large]
        positions = ["left" if x < S / 2 else "right" for x in cx]
        captions = []
        for i, (c, s) in enumerate(first):
            noun = f"{sizes[i]} {c} {s}" if self.size_words else f"{c} {s}"
            if self.scene == "single":
                cap = f"a {noun}" + (f" on the {positions[i]}" if self.position_words else "")
            else:
                c2, s2 = second[i]
                cap = f"a {noun} {relations[i]} a {c2} {s2}"
            captions.append(cap)
        return Batch(
            images=images,
            captions=captions,
            colors=[c for c, _ in first],
            shapes=[s for _, s in first],
            sizes=sizes,
            positions=positions,
            centers=torch.from_numpy(np.stack([cx, cy], 1).astype(np.float32)),
            colors2=None if second is None else [c for c, _ in second],
            shapes2=None if second is None else [s for _, s in second],
            relations=relations,
        )

    def _render(self, objects, n: int, rng: np.random.Generator) -> torch.Tensor:
        """Draw the objects over a noisy grey background; returns (n, 3, S, S) float32 in [0, 1]."""
        S = self.image_size
        background = rng.uniform(0.0, 0.35, n).astype(np.float32)
        noise = rng.normal(0.0, self.noise, (n, 3, S, S)).astype(np.float32)
        jitters = [rng.uniform(-0.08, 0.08, (n, 3)).astype(np.float32) for _ in objects]
        out = np.empty((n, 3, S, S), dtype=np.float32)
        coords = np.arange(S, dtype=np.float32) + 0.5
        for start in range(0, n, _CHUNK):
            sl = slice(start, min(start + _CHUNK, n))
            img = np.broadcast_to(background[sl, None, None, None], (sl.stop - sl.start, 3, S, S)).copy()
            for (pairs, cx, cy, r), jitter in zip(objects, jitters):
                kind = np.array([SHAPES.index(s) for _, s in pairs[sl]])
                rgb = np.array([COLORS[c] for c, _ in pairs[sl]], dtype=np.float32) + jitter[sl]
                mask = _shape_mask(kind, cx[sl], cy[sl], r[sl], coords)  # (b, S, S)
                img = np.where(mask[:, None], rgb[:, :, None, None], img)
            out[sl] = img
        out += noise
        np.clip(out, 0.0, 1.0, out=out)
        return torch.from_numpy(out)


def _shape_mask(kind: np.ndarray, cx: np.ndarray, cy: np.ndarray, r: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """Boolean masks (b, S, S) of shape ``SHAPES[kind]`` centred at (cx, cy) with radius r (pixels)."""
    dx = coords[None, None, :] - cx[:, None, None].astype(np.float32)  # (b, 1, S)
    dy = coords[None, :, None] - cy[:, None, None].astype(np.float32)  # (b, S, 1)
    r = r[:, None, None].astype(np.float32)
    adx, ady = np.abs(dx), np.abs(dy)
    masks = np.stack(
        [
            dx**2 + dy**2 <= r**2,  # circle
            np.maximum(adx, ady) <= 0.8 * r,  # square
            (dy >= -r) & (dy <= 0.8 * r) & (adx <= (dy + r) * 0.62),  # triangle, apex up
            ((adx <= 0.3 * r) & (ady <= r)) | ((ady <= 0.3 * r) & (adx <= r)),  # cross
        ]
    )  # (4, b, S, S)
    return np.take_along_axis(masks, kind[None, :, None, None], 0)[0]


def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's bundled handwritten digits (UCI optdigits test set, 1,797 images).

    Returns:
        images: float32 (1797, 1, 8, 8) in [0, 1]; labels: int64 (1797,) in 0..9.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.from_numpy(bunch.images.astype(np.float32) / 16.0)[:, None]
    return images, torch.from_numpy(bunch.target.astype(np.int64))


def photos() -> dict[str, torch.Tensor]:
    """Real photos that ship with scikit-image and scikit-learn, loaded with no network.

    Returns:
        name -> float32 tensor (3, H, W) in [0, 1] (the grey ``camera`` is repeated to 3 channels).
    """
    import skimage.data
    from sklearn.datasets import load_sample_images

    arrays = {name: getattr(skimage.data, name)() for name in ("astronaut", "coffee", "chelsea", "rocket", "camera")}
    sample = load_sample_images()
    for path, image in zip(sample.filenames, sample.images):
        arrays[path.rsplit("/", 1)[-1].removesuffix(".jpg")] = image  # china, flower
    out = {}
    for name, a in arrays.items():
        if a.ndim == 2:
            a = np.repeat(a[:, :, None], 3, axis=2)
        out[name] = torch.from_numpy(a.astype(np.float32) / 255.0).permute(2, 0, 1).contiguous()
    return out
