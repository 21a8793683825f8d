import itertools
import math

import numpy as np
import pytest
import shap
import torch

from mmlab.attribution import (
    integrated_gradients,
    modality_ablation,
    modality_interaction,
    modality_shapley,
    modality_share,
    permutation_importance,
)


def _f2(x):
    # v = 2a + 3b + 4ab per sample (a, b = mean of each modality): an interaction term
    a, b = x["image"].mean(1), x["text"].mean(1)
    return 2 * a + 3 * b + 4 * a * b


def test_two_modalities_match_closed_form():
    torch.manual_seed(0)
    x = {"image": torch.randn(5, 4), "text": torch.randn(5, 3)}
    base = {"image": torch.zeros(4), "text": torch.zeros(3)}  # one sample, broadcast
    phi = modality_shapley(_f2, x, base)
    a, b = x["image"].mean(1), x["text"].mean(1)
    # with a zero baseline the interaction 4ab is split equally between the two players
    torch.testing.assert_close(phi["image"], 2 * a + 2 * a * b)
    torch.testing.assert_close(phi["text"], 3 * b + 2 * a * b)
    torch.testing.assert_close(phi["image"] + phi["text"], _f2(x) - _f2({k: torch.zeros_like(v) for k, v in x.items()}))


def test_three_modalities_with_interactions_vs_brute_force():
    torch.manual_seed(1)
    x = {"a": torch.randn(6, 2), "b": torch.randn(6, 2), "c": torch.randn(6, 2)}
    base = {k: torch.randn(6, 2) for k in x}  # a different baseline per sample

    def f(d):
        a, b, c = (d[k].sum(1) for k in "abc")
        return torch.stack([a * b * c + a, b**2 - c], 1)  # [N, K=2], 3-way interaction

    phi = modality_shapley(f, x, base)
    # brute force over orderings: average marginal contribution
    names = list(x)
    expected = {k: torch.zeros(6, 2) for k in names}
    for order in itertools.permutations(names):
        present = set()
        for k in order:
            before = f({m: x[m] if m in present else base[m] for m in names})
            present.add(k)
            after = f({m: x[m] if m in present else base[m] for m in names})
            expected[k] += (after - before) / math.factorial(3)
    for k in names:
        torch.testing.assert_close(phi[k], expected[k])
    total = sum(phi.values())
    torch.testing.assert_close(total, f(x) - f(base), atol=1e-6, rtol=0)  # efficiency


def test_matches_shap_exact_explainer():
    torch.manual_seed(2)
    x = {"image": torch.randn(3, 4), "text": torch.randn(3, 3)}

    def model(masks):  # shap calls with binary masks over the 2 modality players
        out = []
        for m in np.asarray(masks):
            d = {k: x[k][i : i + 1] * float(m[j]) for j, k in enumerate(x) for i in [0]}
            out.append(_f2(d).item())
        return np.array(out)

    explainer = shap.explainers.Exact(model, shap.maskers.Independent(np.zeros((1, 2))))
    ref = explainer(np.ones((1, 2))).values[0]
    phi = modality_shapley(_f2, {k: v[:1] for k, v in x.items()}, {"image": torch.zeros(4), "text": torch.zeros(3)})
    np.testing.assert_allclose([phi["image"].item(), phi["text"].item()], ref, atol=1e-5)


def test_permutation_importance_finds_the_used_modality():
    torch.manual_seed(3)
    x = {"image": torch.randn(400, 2), "text": torch.randn(400, 2)}
    y = x["image"][:, 0]

    def f(d):
        return d["image"][:, 0] + 0.0 * d["text"][:, 0]

    def neg_mse(pred, target):
        return -((pred - target) ** 2).mean()

    drops = permutation_importance(f, x, y, neg_mse, n_repeats=5, seed=0)
    assert drops["image"] > 1.5 and drops["text"] == 0.0
    assert drops == permutation_importance(f, x, y, neg_mse, n_repeats=5, seed=0)  # deterministic


def test_ablation_and_integrated_gradients():
    torch.manual_seed(4)
    x = {"image": torch.randn(5, 4), "text": torch.randn(5, 3)}
    base = {"image": torch.zeros(5, 4), "text": torch.zeros(5, 3)}
    abl = modality_ablation(_f2, x, base)
    a, b = x["image"].mean(1), x["text"].mean(1)
    torch.testing.assert_close(abl["image"], 2 * a + 4 * a * b)  # leave-one-out gives the interaction to both
    ig = integrated_gradients(_f2, x, base, steps=64)
    torch.testing.assert_close(ig["image"] + ig["text"], _f2(x), atol=1e-4, rtol=0)  # completeness


def test_modality_share():
    share = modality_share({"text": torch.tensor([1.0, -1.0]), "image": torch.tensor([2.0, 0.0])})
    assert share == {"text": 0.5, "image": 0.5}
    signed = modality_share({"text": torch.tensor([1.0, -1.0]), "image": torch.tensor([2.0, 0.0])}, absolute=False)
    assert signed == {"text": 0.0, "image": 1.0}  # signs cancel: why MM-SHAP takes absolute values
    with pytest.raises(ValueError, match="sum to zero"):
        modality_share({"a": torch.zeros(2)})


def test_errors():
    x = {"image": torch.randn(4, 2), "text": torch.randn(4, 2)}
    with pytest.raises(ValueError, match="same modality keys"):
        modality_shapley(_f2, x, {"image": torch.zeros(2)})
    with pytest.raises(ValueError, match="same batch size"):
        modality_shapley(_f2, {"image": torch.randn(4, 2), "text": torch.randn(3, 2)}, {"image": torch.zeros(2), "text": torch.zeros(2)})
    with pytest.raises(ValueError, match=r"baselines\['text'\] must be shaped like"):
        modality_shapley(_f2, x, {"image": torch.zeros(2), "text": torch.zeros(5)})
    with pytest.raises(ValueError, match=r"f must return a tensor \[N\] or \[N, K\]"):
        modality_shapley(lambda d: d["image"].sum(), x, {k: torch.zeros(2) for k in x})
    with pytest.raises(ValueError, match="metric must return a scalar"):
        permutation_importance(_f2, x, torch.zeros(4), lambda p, t: p - t)
    with pytest.raises(ValueError, match="targets must be a tensor with batch size 4"):
        permutation_importance(_f2, x, torch.zeros(3), lambda p, t: 0.0)
    with pytest.raises(TypeError, match="non-empty dict"):
        modality_shapley(_f2, {}, {})


def test_interaction_closed_forms():
    torch.manual_seed(1)
    x = {"image": torch.randn(6, 4), "text": torch.randn(6, 3)}
    base = {"image": torch.randn(4), "text": torch.randn(3)}
    a, b = x["image"].mean(1), x["text"].mean(1)
    a0, b0 = base["image"].mean(), base["text"].mean()
    # f = 2a + 3b + 4ab: the interaction is 4 (a - a0)(b - b0); an additive f has none
    torch.testing.assert_close(modality_interaction(_f2, x, base), 4 * (a - a0) * (b - b0))
    additive = modality_interaction(lambda d: 2 * d["image"].mean(1) - d["text"].mean(1), x, base)
    torch.testing.assert_close(additive, torch.zeros(6), atol=1e-6, rtol=0)
    # redundancy: f = "either modality is on" (a max) with both on and a zero baseline gives I = -1
    on = {"image": torch.ones(2, 1), "text": torch.ones(2, 1)}
    off = {"image": torch.zeros(1), "text": torch.zeros(1)}
    either = modality_interaction(lambda d: torch.maximum(d["image"], d["text"])[:, 0], on, off)
    torch.testing.assert_close(either, -torch.ones(2))
    # Shapley gives each player half of it: phi_a = v(a) - v(empty) + I/2
    phi = modality_shapley(_f2, x, base)
    va = _f2({"image": x["image"], "text": base["text"].expand(6, -1)})
    v0 = _f2({k: v.expand(6, -1) for k, v in base.items()})
    torch.testing.assert_close(phi["image"], va - v0 + modality_interaction(_f2, x, base) / 2)


def test_interaction_needs_two_modalities():
    x = {"a": torch.zeros(2, 1), "b": torch.zeros(2, 1), "c": torch.zeros(2, 1)}
    with pytest.raises(ValueError, match="exactly two"):
        modality_interaction(lambda d: d["a"][:, 0], x, {k: torch.zeros(1) for k in x})
