import pytest
import torch
from open_clip.loss import ClipLoss, SigLipLoss

from mmlab.clip import (
    MemoTokenizer,
    TinyClipRecipe,
    build_clip,
    compositional_logits,
    contrastive_loss,
    flat_colour,
    grey,
    load_clip,
    pair_classnames,
    preprocess_tensors,
    save_clip,
    siglip_loss,
    silhouette,
    tokenizer_for,
    train_tiny_clip,
    zero_shot_classifier,
    zero_shot_predict,
)
from mmlab.data import COLORS, ShapesWorld


@pytest.mark.parametrize("batch_size", [1, 2, 7, 64])
def test_contrastive_loss_equals_open_clip(batch_size):
    g = torch.Generator().manual_seed(batch_size)
    img = torch.nn.functional.normalize(torch.randn(batch_size, 16, generator=g), dim=-1)
    txt = torch.nn.functional.normalize(torch.randn(batch_size, 16, generator=g), dim=-1)
    for scale in (1.0, 14.3, 100.0):
        ref = ClipLoss()(img, txt, torch.tensor(scale))
        torch.testing.assert_close(contrastive_loss(img, txt, torch.tensor(scale)), ref)


def test_memo_tokenizer_returns_what_open_clip_returns():
    tok = tokenizer_for(TinyClipRecipe().model_cfg)
    memo = MemoTokenizer(tok)
    texts = ["a red circle", "the square is blue", "a red circle", "a photo of a cross."]
    for _ in range(2):  # the second call is served from the memo
        out = memo(texts)
        assert torch.equal(out, tok(texts))
    out[0, 0] = -1  # callers get a copy, not the memo's rows
    assert torch.equal(memo(texts), tok(texts))
    with pytest.raises(TypeError, match="texts must be a list"):
        memo("a red circle")


def test_contrastive_loss_errors():
    with pytest.raises(ValueError, match="must be \\(B, D\\) of one shape"):
        contrastive_loss(torch.randn(3, 4), torch.randn(2, 4), 1.0)


@pytest.fixture(scope="module")
def quick_model():
    """A tiny CLIP trained for a few seconds: it must already beat chance clearly on seen pairs."""
    cfg = TinyClipRecipe(num_steps=150)
    model, history = train_tiny_clip(cfg, progress=False, eval_every=150)
    return cfg, model, history


def test_quick_training_learns(quick_model):
    cfg, model, history = quick_model
    world = ShapesWorld()
    seen = history.evals[-1][1]["seen_acc"]
    assert seen > 3 / len(world.pairs)  # > 3x chance (1/24) after 150 steps
    assert history.losses[-1] < history.losses[0]


def test_zero_shot_api(quick_model):
    cfg, model, _ = quick_model
    world = ShapesWorld()
    tok = tokenizer_for(cfg.model_cfg)
    clf = zero_shot_classifier(model, tok, pair_classnames(world), ["a {}", "a photo of a {}."])
    assert clf.shape == (cfg.embed_dim, len(world.pairs))
    torch.testing.assert_close(clf.norm(dim=0), torch.ones(len(world.pairs)))
    probs = zero_shot_predict(model, world.sample(5).images, clf)
    assert probs.shape == (5, len(world.pairs))
    torch.testing.assert_close(probs.sum(-1), torch.ones(5))
    # images at another resolution are resized by the model's own preprocessing
    assert zero_shot_predict(model, torch.rand(2, 3, 48, 48), clf).shape == (2, len(world.pairs))


def test_zero_shot_errors(quick_model):
    cfg, model, _ = quick_model
    tok = tokenizer_for(cfg.model_cfg)
    with pytest.raises(ValueError, match="at least one class name"):
        zero_shot_classifier(model, tok, [], ["a {}"])
    with pytest.raises(ValueError, match="exactly one '\\{\\}'"):
        zero_shot_classifier(model, tok, ["red circle"], ["a photo"])
    clf = zero_shot_classifier(model, tok, ["red circle"], ["a {}"])
    with pytest.raises(ValueError, match=r"images must be a tensor \(N, 3, H, W\)"):
        zero_shot_predict(model, torch.rand(3, 32, 32), clf)
    with pytest.raises(ValueError, match=r"images must lie in \[0, 1\]"):
        zero_shot_predict(model, torch.rand(1, 3, 32, 32) * 255, clf)


def test_silhouette_keeps_the_shape_where_grey_loses_green():
    world = ShapesWorld()
    background = torch.full((1, 3, 4, 4), sum(COLORS["green"]) / 3)  # a grey pixel (0.33, inside 0-0.35) as bright as green
    green = torch.tensor(COLORS["green"]).view(1, 3, 1, 1).expand(1, 3, 4, 4)  # (0.10, 0.75, 0.15)
    torch.testing.assert_close(grey(green), grey(background))  # in grey the green object is the background
    assert silhouette(background).abs().max() == 0
    torch.testing.assert_close(silhouette(green), torch.full((1, 3, 4, 4), 0.75 - 0.10))
    images = world.sample(3).images
    out = silhouette(images)
    assert out.shape == images.shape and torch.equal(out[:, 0], out[:, 2])
    torch.testing.assert_close(out[:, 0], images.amax(1) - images.amin(1))


def test_compositional_logits_add_one_cosine_per_attribute(quick_model):
    cfg, model, _ = quick_model
    world = ShapesWorld()
    tok = tokenizer_for(cfg.model_cfg)
    images = world.sample(4, "heldout").images
    scores = compositional_logits(model, tok, images, world.colors, world.shapes)
    assert scores.shape == (4, len(world.colors) * len(world.shapes))
    with torch.no_grad():  # by hand, with open_clip's own encoders: colour of the blurred copy, shape of the silhouette
        def cos(x, texts):
            f = model.encode_image(preprocess_tensors(model, x), normalize=True)
            return f @ model.encode_text(tok(texts), normalize=True).T
        colour = cos(flat_colour(images), [f"a {c} shape" for c in world.colors])  # (4, C)
        shape = cos(silhouette(images), [f"a {s}" for s in world.shapes])  # (4, S)
    i, c, s = 2, 1, 3
    torch.testing.assert_close(scores[i, c * len(world.shapes) + s], colour[i, c] + shape[i, s])
    same_view = compositional_logits(model, tok, images, world.colors, world.shapes, colour_view=grey, shape_view=grey)
    assert not torch.allclose(same_view, scores)
    with pytest.raises(ValueError, match="shape_template must contain exactly one"):
        compositional_logits(model, tok, images, world.colors, world.shapes, shape_template="a shape")


def test_save_and_load_through_the_pretrained_loader(quick_model, tmp_path):
    cfg, model, _ = quick_model
    directory = save_clip(model, cfg.model_cfg, tmp_path / "tiny")
    loaded, preprocess, tokenizer = load_clip(f"local-dir:{directory}")
    images = ShapesWorld().sample(4, seed=3).images
    tokens = tokenizer(["a red circle", "a blue square"])
    assert torch.equal(tokens, tokenizer_for(cfg.model_cfg)(["a red circle", "a blue square"]))
    with torch.no_grad():
        for a, b in [(model, loaded)]:
            from mmlab.clip import encode

            ia, ta = encode(a, images, tokens)
            ib, tb = encode(b, images, tokens)
    torch.testing.assert_close(ia, ib)
    torch.testing.assert_close(ta, tb)
    assert callable(preprocess)


def test_build_is_seeded():
    cfg = TinyClipRecipe()
    a, b = build_clip(cfg.model_cfg, seed=1), build_clip(cfg.model_cfg, seed=1)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


def test_tiny_clip_trained_caches_model_and_history(tmp_path, monkeypatch):
    """Notebook 01's entry point: the first call trains, the second loads the same weights and the same history."""
    from mmlab.clip import tiny_clip_trained

    monkeypatch.setenv("MMLAB_CACHE", str(tmp_path))
    recipe = TinyClipRecipe(num_steps=3, seed=5)
    model, history = tiny_clip_trained(recipe, progress=False, eval_every=3)
    again, history2 = tiny_clip_trained(recipe, progress=False, eval_every=3)
    assert history2.to_json() == history.to_json()  # the same losses, evaluations and recorded time
    for (name, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), name


def test_tiny_clip_keeps_the_history_for_notebook_01(tmp_path, monkeypatch):
    """Whichever notebook trains the tiny CLIP first, notebook 01 later shows its training curves from the cache."""
    from mmlab.clip import tiny_clip, tiny_clip_trained

    monkeypatch.setenv("MMLAB_CACHE", str(tmp_path))
    recipe = TinyClipRecipe(num_steps=3, seed=6)
    tiny_clip(progress=False, recipe=recipe)
    _, history = tiny_clip_trained(recipe, progress=False)
    assert history is not None and len(history.losses) == 3


@pytest.mark.parametrize("batch_size", [1, 4, 18])
def test_siglip_loss_equals_open_clip(batch_size):
    g = torch.Generator().manual_seed(batch_size)
    image = torch.nn.functional.normalize(torch.randn(batch_size, 16, generator=g), dim=-1)
    text = torch.nn.functional.normalize(torch.randn(batch_size, 16, generator=g), dim=-1)
    scale, bias = torch.tensor(10.0), torch.tensor(-10.0)
    torch.testing.assert_close(siglip_loss(image, text, scale, bias), SigLipLoss()(image, text, scale, bias))
    with pytest.raises(ValueError):
        siglip_loss(image, text[:, :8], scale, bias)
