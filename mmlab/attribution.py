"""Which modality drove a fused model's prediction: exact modality Shapley values, permutation importance,
leave-one-modality-out ablation, integrated gradients per modality, and the MM-SHAP share.

A model is seen as ``f(inputs) -> [N]`` or ``[N, K]``, where ``inputs`` maps modality name -> tensor with the
batch first (e.g. ``{"image": (N, 3, H, W), "text": (N, L, D)}``). "Absent" modalities take the value of an
explicit, caller-chosen baseline (zeros, the dataset mean, another sample...): Shapley values answer
"compared to what?", and the baseline is that "what".
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping

import torch

Inputs = Mapping[str, torch.Tensor]


def _check_inputs(inputs: Inputs, baselines: Inputs | None = None) -> int:
    if not isinstance(inputs, Mapping) or not inputs:
        raise TypeError("inputs must be a non-empty dict of modality name -> tensor (batch first)")
    sizes = {k: v.shape[0] if isinstance(v, torch.Tensor) and v.ndim else None for k, v in inputs.items()}
    if any(s is None for s in sizes.values()):
        raise TypeError(f"every input must be a tensor with a batch dimension, got {sizes}")
    if len(set(sizes.values())) != 1:
        raise ValueError(f"all modalities must have the same batch size, got {sizes}")
    n = next(iter(sizes.values()))
    if baselines is not None:
        if set(baselines) != set(inputs):
            raise ValueError(f"baselines must have the same modality keys as inputs: {sorted(inputs)} vs {sorted(baselines)}")
        for k, b in baselines.items():
            x = inputs[k]
            if not isinstance(b, torch.Tensor) or (b.shape != x.shape and b.shape != x.shape[1:] and b.shape != (1, *x.shape[1:])):
                raise ValueError(f"baselines[{k!r}] must be shaped like the input {tuple(x.shape)}, one sample "
                                 f"{tuple(x.shape[1:])} or (1, ...), got {tuple(getattr(b, 'shape', ()))}")
    return n


def _expand(baseline: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    if baseline.shape == like.shape:
        return baseline
    return baseline.reshape(1, *like.shape[1:]).expand_as(like)


def _call(f: Callable[[dict], torch.Tensor], inputs: dict, n: int) -> torch.Tensor:
    out = f(inputs)
    if not isinstance(out, torch.Tensor) or out.ndim not in (1, 2) or out.shape[0] != n:
        raise ValueError(f"f must return a tensor [N] or [N, K] with N={n}, got {tuple(getattr(out, 'shape', ())) or type(out).__name__}")
    return out


def modality_shapley(f: Callable[[dict], torch.Tensor], inputs: Inputs, baselines: Inputs) -> dict[str, torch.Tensor]:
    """Exact Shapley values with the modalities as players (Shapley 1953; all 2^M coalitions).

    φ_i = Σ_{S ⊆ M∖{i}} |S|! (M-|S|-1)! / M! · [v(S ∪ {i}) - v(S)], where v(S) = f(x_S, baseline_{M∖S}).
    Efficiency holds exactly: Σ_i φ_i = f(x) - f(baseline).

    Args:
        f: dict of modality tensors (batch first) -> [N] or [N, K].
        inputs: modality -> (N, ...) tensor.
        baselines: modality -> tensor shaped like the input, or one sample (...) / (1, ...) broadcast over N.
    Returns:
        modality -> tensor shaped like f's output ([N] or [N, K]): each sample's (and class's) Shapley value.
    """
    n = _check_inputs(inputs, baselines)
    names = list(inputs)
    M = len(names)
    base = {k: _expand(baselines[k], inputs[k]) for k in names}
    values: dict[frozenset, torch.Tensor] = {}
    with torch.no_grad():
        for r in range(M + 1):
            for coalition in itertools.combinations(names, r):
                s = frozenset(coalition)
                values[s] = _call(f, {k: inputs[k] if k in s else base[k] for k in names}, n).detach()
    shapes = {tuple(v.shape) for v in values.values()}
    if len(shapes) != 1:
        raise ValueError(f"f returned different shapes for different coalitions: {shapes}")
    phi = {}
    for i in names:
        others = [k for k in names if k != i]
        total = torch.zeros_like(values[frozenset()])
        for r in range(M):
            weight = math.factorial(r) * math.factorial(M - r - 1) / math.factorial(M)
            for coalition in itertools.combinations(others, r):
                s = frozenset(coalition)
                total = total + weight * (values[s | {i}] - values[s])
        phi[i] = total
    return phi


def modality_interaction(f: Callable[[dict], torch.Tensor], inputs: Inputs, baselines: Inputs) -> torch.Tensor:
    """Shapley interaction index of two modalities a, b: v({a,b}) − v({a}) − v({b}) + v(∅), per sample (and class).

    v(S) = f(x_S, baseline_rest), as in :func:`modality_shapley`, which gives each modality half of this term:
    φ_a = v({a}) − v(∅) + I / 2. I > 0: the modalities complete each other (synergy); I < 0: either one suffices
    (redundancy); I = 0: f is additive in the two. Shaped like f's output ([N] or [N, K]).
    """
    n = _check_inputs(inputs, baselines)
    if len(inputs) != 2:
        raise ValueError(f"modality_interaction needs exactly two modalities, got {sorted(inputs)}")
    a, b = list(inputs)
    base = {k: _expand(baselines[k], inputs[k]) for k in inputs}
    with torch.no_grad():
        def v(present: set[str]) -> torch.Tensor:
            return _call(f, {k: inputs[k] if k in present else base[k] for k in inputs}, n)

        return v({a, b}) - v({a}) - v({b}) + v(set())


def permutation_importance(
    f: Callable[[dict], torch.Tensor],
    inputs: Inputs,
    targets: torch.Tensor,
    metric: Callable[[torch.Tensor, torch.Tensor], float | torch.Tensor],
    n_repeats: int = 10,
    seed: int = 0,
) -> dict[str, float]:
    """Drop in ``metric(f(inputs), targets)`` when one modality is shuffled across the batch (Breiman 2001).

    Averaged over ``n_repeats`` permutations; this is the Perceptual Score of Gat et al. (NeurIPS 2021).
    A global measure (one number per modality for the dataset), unlike Shapley values per sample.

    Returns:
        modality -> mean drop (larger = the model relies more on that modality).
    """
    n = _check_inputs(inputs)
    if not isinstance(targets, torch.Tensor) or targets.shape[0] != n:
        raise ValueError(f"targets must be a tensor with batch size {n}, got {tuple(getattr(targets, 'shape', ()))}")
    if not isinstance(n_repeats, int) or n_repeats < 1:
        raise ValueError(f"n_repeats must be a positive int, got {n_repeats!r}")

    def score(x: dict) -> float:
        with torch.no_grad():
            value = metric(_call(f, x, n), targets)
        if isinstance(value, torch.Tensor):
            if value.numel() != 1:
                raise ValueError(f"metric must return a scalar, got a tensor of shape {tuple(value.shape)}")
            value = value.item()
        if not isinstance(value, (int, float)):
            raise ValueError(f"metric must return a number, got {type(value).__name__}")
        return float(value)

    base = score(dict(inputs))
    g = torch.Generator().manual_seed(seed)
    drops = {}
    for name in inputs:
        total = 0.0
        for _ in range(n_repeats):
            perm = torch.randperm(n, generator=g)
            total += base - score({**inputs, name: inputs[name][perm]})
        drops[name] = total / n_repeats
    return drops


def modality_ablation(f: Callable[[dict], torch.Tensor], inputs: Inputs, baselines: Inputs) -> dict[str, torch.Tensor]:
    """Leave-one-modality-out: f(x) - f(x with modality i set to its baseline), per sample ([N] or [N, K])."""
    n = _check_inputs(inputs, baselines)
    with torch.no_grad():
        full = _call(f, dict(inputs), n)
        return {k: full - _call(f, {**inputs, k: _expand(baselines[k], inputs[k])}, n) for k in inputs}


def integrated_gradients(f: Callable[[dict], torch.Tensor], inputs: Inputs, baselines: Inputs,
                         target: torch.Tensor | None = None, steps: int = 32) -> dict[str, torch.Tensor]:
    """Integrated gradients (Sundararajan et al. 2017), summed within each modality: one value per sample.

    IG_i = (x_i - x'_i) · ∫_0^1 ∂f(x' + α(x - x'))/∂x_i dα, by the midpoint rule with ``steps`` points;
    completeness: Σ over all modalities ≈ f(x) - f(x'). Inputs must be float tensors (embeddings, pixels).

    Args:
        target: for f returning [N, K], the class index per sample (N,) whose output is explained.
    Returns:
        modality -> (N,) attribution.
    """
    n = _check_inputs(inputs, baselines)
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    base = {k: _expand(baselines[k], inputs[k]).detach() for k in inputs}
    totals = {k: torch.zeros(n, device=inputs[k].device) for k in inputs}
    for s in range(steps):
        alpha = (s + 0.5) / steps
        point = {k: (base[k] + alpha * (inputs[k].detach() - base[k])).requires_grad_(True) for k in inputs}
        out = _call(f, point, n)
        if out.ndim == 2:
            if target is None:
                raise ValueError("f returns [N, K]: pass target (N,) with the class to explain")
            out = out.gather(1, target.view(-1, 1)).squeeze(1)
        grads = torch.autograd.grad(out.sum(), list(point.values()))
        for k, g in zip(point, grads):
            totals[k] += (g * (inputs[k].detach() - base[k])).reshape(n, -1).sum(1).detach() / steps
    return totals


def modality_share(attributions: Mapping[str, torch.Tensor], absolute: bool = True) -> dict[str, float]:
    """Each modality's share of the total attribution: Σ|φ_m| / Σ_m' Σ|φ_m'| (MM-SHAP's T-SHAP / V-SHAP).

    With ``absolute=True`` (MM-SHAP, Parcalabescu & Frank 2023) positive and negative contributions cannot
    cancel. Values are summed over every sample (and class) given.
    """
    if not attributions:
        raise ValueError("attributions must hold at least one modality")
    mass = {k: (v.abs() if absolute else v).sum().item() for k, v in attributions.items()}
    total = sum(mass.values())
    if total == 0:
        raise ValueError("attributions sum to zero: the shares are undefined (the model ignores every modality here)")
    return {k: m / total for k, m in mass.items()}
