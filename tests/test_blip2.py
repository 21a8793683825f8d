"""The tiny BLIP-2: stage-1 masks (and that the real Blip2QFormerModel obeys them), the model wiring,
captioning and its errors, the loader round trip, and the cached tiny_blip2 recipe."""

from dataclasses import replace

import pytest
import torch
from transformers import Blip2Processor, OPTForCausalLM

from mmlab import blip2 as mb
from mmlab.clip import OPENAI_MEAN, OPENAI_STD, TinyClipRecipe, build_clip
from mmlab.data import ShapesWorld

SMALL = mb.TinyBlip2Recipe(lm_steps=3, stage1_steps=2, stage2_steps=2, batch_size=8)


@pytest.fixture(scope="module")
def world():
    return ShapesWorld(image_size=32, seed=0)


@pytest.fixture(scope="module")
def parts(world):
    """A random tiny CLIP and a random tiny OPT: wiring tests need no training."""
    tokenizer = mb.build_tokenizer(mb.caption_words(world))
    clip_model = build_clip(TinyClipRecipe().model_cfg, seed=0)
    torch.manual_seed(0)
    lm = OPTForCausalLM(mb.lm_config(SMALL, len(tokenizer))).eval()
    processor = mb.build_processor(tokenizer, 32, SMALL.num_query_tokens)
    model = mb.build_blip2(SMALL, clip_model, TinyClipRecipe().model_cfg, lm, tokenizer)
    return clip_model, lm, tokenizer, processor, model


def test_stage1_masks_match_the_paper():
    text_mask = torch.tensor([[1, 1, 1, 0]])  # 3 tokens + 1 pad
    m = mb.stage1_masks(2, text_mask)
    k = 2
    assert set(m) == {"itc", "itm", "itg"} and all(v.shape == (1, 6, 6) and v.dtype == torch.bool for v in m.values())
    itc, itm, itg = m["itc"][0], m["itm"][0], m["itg"][0]
    assert itc[:k, :k].all() and itc[k:, k:5].all() and not itc[:k, k:].any() and not itc[k:, :k].any()
    assert itm[:, :5].all()
    assert itg[:k, :k].all() and not itg[:k, k:].any()  # queries never see text
    assert itg[k:, :k].all()  # text sees every query
    assert torch.equal(itg[k:5, k:5], torch.ones(3, 3).tril().bool())  # causal text
    for v in (itc, itm, itg):
        assert not v[:, 5].any()  # padding is never attended to


def test_stage1_masks_errors():
    with pytest.raises(ValueError, match="text_attention_mask"):
        mb.stage1_masks(2, torch.ones(3))
    with pytest.raises(ValueError, match="num_query_tokens"):
        mb.stage1_masks(0, torch.ones(1, 3))


def test_qformer_obeys_the_masks(parts):
    """Changing the text changes the query outputs under ITM's mask only, never under ITC's or ITG's."""
    _, _, tokenizer, processor, model = parts
    torch.manual_seed(0)
    pre = mb.QFormerPretrainer(model.config.qformer_config, SMALL.num_query_tokens, SMALL.embed_dim).eval()
    image_embeds = torch.randn(2, 32, model.vision_model.hidden_size)
    a = tokenizer(["a red circle", "a blue cross"], return_tensors="pt")
    b = tokenizer(["a green square", "a cyan circle"], return_tensors="pt")
    k = SMALL.num_query_tokens
    with torch.no_grad():
        for name, changes in (("itc", False), ("itg", False), ("itm", True)):
            qa = pre.run(image_embeds, a["input_ids"], mb.stage1_masks(k, a["attention_mask"])[name])[:, :k]
            qb = pre.run(image_embeds, b["input_ids"], mb.stage1_masks(k, b["attention_mask"])[name])[:, :k]
            assert torch.allclose(qa, qb, atol=1e-6) != changes, name
        # ITG: text position t never depends on text after t
        ta = pre.run(image_embeds, a["input_ids"], mb.stage1_masks(k, a["attention_mask"])["itg"])
        c = a["input_ids"].clone()
        c[:, -1] = mb.UNK
        tc = pre.run(image_embeds, c, mb.stage1_masks(k, a["attention_mask"])["itg"])
        assert torch.allclose(ta[:, :-1], tc[:, :-1], atol=1e-6) and not torch.allclose(ta[:, -1], tc[:, -1])
    images, captions = mb.caption_batch(ShapesWorld(32, seed=0), 8, seed=0)
    text = tokenizer(captions, padding=True, return_tensors="pt")
    embeds = model.vision_model(mb.pixel_values(processor, images)).last_hidden_state
    out = pre(embeds, text["input_ids"], text["attention_mask"], torch.arange(len(captions)))
    assert all(torch.isfinite(out[key]) for key in ("loss", "itc", "itm", "itg"))
    assert torch.allclose(out["loss"], out["itc"] + out["itm"] + out["itg"])


def test_build_blip2_freezes_encoder_and_lm(parts):
    clip_model, lm, tokenizer, processor, model = parts
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert trainable == {id(p) for p in mb.trainable_parameters(model)}
    assert torch.equal(model.vision_model.resnet.conv1.weight, clip_model.visual.conv1.weight)
    assert torch.equal(model.language_model.lm_head.weight, lm.lm_head.weight)
    assert model.query_tokens.std() > 0  # not transformers' zero init: queries must differ
    images, captions = mb.caption_batch(ShapesWorld(32, seed=0), 8, seed=1)
    batch = {"pixel_values": mb.pixel_values(processor, images), **mb.lm_inputs(tokenizer, captions, SMALL.num_query_tokens)}
    loss = model(**batch).loss
    loss.backward()
    assert torch.isfinite(loss)
    assert model.vision_model.resnet.conv1.weight.grad is None and model.language_model.lm_head.weight.grad is None
    assert model.query_tokens.grad is not None and model.query_tokens.grad.abs().sum() > 0
    model.zero_grad(set_to_none=True)


def test_lm_inputs_labels(world):
    tokenizer = mb.build_tokenizer(mb.caption_words(world))
    out = mb.lm_inputs(tokenizer, ["a red circle", "a cross"], 3)
    assert out["input_ids"][:, :3].eq(mb.IMAGE).all()
    assert out["labels"][0].tolist() == [-100, -100, -100, -100, *tokenizer("a red circle")["input_ids"][1:]]
    assert out["labels"][1, -1] == -100 and out["attention_mask"][1, -1] == 0  # padding


def test_read_prefix_batch_puts_the_caption_words_in_the_prefix(world):
    tokenizer = mb.build_tokenizer(mb.caption_words(world))
    b = mb.read_prefix_batch(world, tokenizer, 64, 8, 16, seed=0)
    assert b["noise"].shape == (64, 8, 16)
    for prefix, ids in zip(b["prefix_ids"], b["input_ids"][:, 8:]):
        words = set(tokenizer.convert_ids_to_tokens([i for i in prefix.tolist() if i >= 0]))
        caption = [t for t in tokenizer.convert_ids_to_tokens(ids) if t not in ("<s>", "</s>", "<pad>", "a", "shape")]
        assert words == set(caption)


def test_caption_and_errors(parts, world):
    *_, processor, model = parts
    images = world.sample(3, "train", seed=0).images
    out = mb.caption(model, processor, images, max_new_tokens=3)
    assert len(out) == 3 and all(isinstance(t, str) for t in out)
    with pytest.raises(ValueError, match="images"):
        mb.caption(model, processor, images[0])
    with pytest.raises(ValueError, match="images"):
        mb.caption(model, processor, images * 255)
    with pytest.raises(ValueError, match="images"):
        mb.caption(model, processor, images[:0])
    with pytest.raises(ValueError, match="max_new_tokens"):
        mb.caption(model, processor, images, max_new_tokens=0)
    with pytest.raises(ValueError, match="need as many"):
        mb.exact_match(["a"], ["a", "b"])


def test_views_and_tokenizer_errors():
    x = torch.randn(2, 3, 32, 32)
    grey, blur = mb.image_views(x, ("grey", "blur"))
    std = torch.tensor(OPENAI_STD).view(1, 3, 1, 1)
    mean = torch.tensor(OPENAI_MEAN).view(1, 3, 1, 1)
    pixels = grey * std + mean
    assert torch.allclose(pixels[:, 0], pixels[:, 1], atol=1e-6) and torch.allclose(pixels[:, 1], pixels[:, 2], atol=1e-6)
    assert blur[..., :16, :16].flatten(2).std(-1).max() < 1e-6  # one colour per quarter
    silhouette, = mb.image_views(x, ("silhouette",))
    chroma = (silhouette * std + mean)[:, 0]  # the same on every channel: max - min of the un-normalised pixels
    torch.testing.assert_close(chroma, (x * std + mean).amax(1) - (x * std + mean).amin(1))
    with pytest.raises(ValueError, match="views"):
        mb.image_views(x, ("sepia",))
    with pytest.raises(ValueError, match="stage"):
        mb.ClipImageTower(TinyClipRecipe().model_cfg["vision_cfg"], 64, stage=5)
    with pytest.raises(ValueError, match="words"):
        mb.build_tokenizer(["a", "a"])
    with pytest.raises(ValueError, match="kinds"):
        mb.attribute_captions(["red"], ["circle"], ["size"])


def test_save_load_round_trip(parts, world, tmp_path):
    *_, processor, model = parts
    mb.save_blip2(model, processor, tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    loaded, loaded_processor = mb.load_blip2(tmp_path)
    assert type(loaded) is mb.TinyBlip2ForConditionalGeneration
    images = world.sample(4, "heldout", seed=3).images
    batch = {"pixel_values": mb.pixel_values(processor, images),
             **mb.lm_inputs(processor.tokenizer, ["a red circle"] * 4, SMALL.num_query_tokens)}
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, loaded(**batch).logits)
    assert mb.caption(model, processor, images) == mb.caption(loaded, loaded_processor, images)


def test_tiny_blip2_trains_once_then_loads(monkeypatch, tmp_path, parts):
    """The cached recipe: the first call trains and saves, the second loads the same weights without training."""
    clip_model = parts[0]
    monkeypatch.setenv("MMLAB_CACHE", str(tmp_path))
    model, processor = mb.tiny_blip2(seed=0, progress=False, clip_model=clip_model, recipe=SMALL)
    assert isinstance(processor, Blip2Processor) and len(list(tmp_path.glob("tiny_blip2-*"))) == 1

    def fail(*args, **kwargs):
        raise AssertionError("trained again instead of loading the cache")

    monkeypatch.setattr(mb, "train_stage1", fail)
    monkeypatch.setattr(mb, "train_stage2", fail)
    again, _ = mb.tiny_blip2(seed=0, progress=False, clip_model=clip_model, recipe=SMALL)
    for (name, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), name
    with pytest.raises(TypeError, match="seed"):
        mb.tiny_blip2(seed="0")


def test_pretrained_branch_calls_run_on_a_saved_model(parts, tmp_path):
    """Notebook 02's pretrained cell (processor on a real photo, then generate) through load_blip2, offline."""
    from mmlab.data import photos

    *_, processor, model = parts
    mb.save_blip2(model, processor, tmp_path)
    big, big_processor = mb.load_blip2(tmp_path, dtype=torch.float32, device="cpu")
    pic = photos()["astronaut"]
    inputs = big_processor(images=pic, return_tensors="pt", do_rescale=False, input_data_format="channels_first").to("cpu", torch.float32)
    assert inputs["pixel_values"].shape == (1, 3, 32, 32)
    out = big.generate(**inputs, max_new_tokens=3)
    assert out.shape[0] == 1 and isinstance(big_processor.batch_decode(out, skip_special_tokens=True)[0], str)


def test_tower_passes_its_tokens_through(parts, world):
    *_, processor, model = parts
    tower = model.vision_model
    with torch.no_grad():
        tokens = tower(mb.pixel_values(processor, world.sample(3, "train", seed=0).images)).last_hidden_state
        assert torch.equal(tower(tokens).last_hidden_state, tokens)
    with pytest.raises(ValueError, match=f"\\(N, T, {tower.hidden_size}\\)"):
        tower(tokens[..., :-1])
    with pytest.raises(ValueError, match="images .* or tokens"):
        tower(tokens[0])


def test_stage2_batches_train_exactly_as_fresh_batches(parts, world):
    """Stage 2 and the per-token connector give the same losses and weights from stored tokens as from images."""
    clip_model, lm, tokenizer, processor, _ = parts
    recipe = mb.TinyBlip2Recipe(stage2_steps=3, batch_size=8)

    def stage2(batches):
        model = mb.build_blip2(recipe, clip_model, TinyClipRecipe().model_cfg, lm, tokenizer)
        history = mb.train_stage2(model, processor, world, recipe, progress=False, eval_every=3, eval_n=4, batches=batches)
        return history, model

    def patch(model, batches):
        torch.manual_seed(0)  # the projection's initialisation
        captioner = mb.PatchPrefixCaptioner(model.vision_model, model.language_model, model.vision_model.hidden_size)
        return mb.train_patch_prefix(captioner, processor, world, recipe, progress=False, eval_every=3, eval_n=4,
                                     batches=batches), captioner

    fresh, fresh_model = stage2(None)
    # as in notebook 02: the store runs the tower of the model it first trains (which train() puts in train mode)
    model = mb.build_blip2(recipe, clip_model, TinyClipRecipe().model_cfg, lm, tokenizer)
    batches = mb.Stage2Batches(model.vision_model, processor, world, recipe)
    running_stats = [b.clone() for b in model.vision_model.buffers()]
    stored = mb.train_stage2(model, processor, world, recipe, progress=False, eval_every=3, eval_n=4, batches=batches)
    assert (batches.made, batches.read) == (3, 0)
    assert stored.losses == fresh.losses and stored.evals == fresh.evals
    for a, b in zip(mb.trainable_parameters(fresh_model), mb.trainable_parameters(model)):
        assert torch.equal(a, b)
    assert all(torch.equal(a, b) for a, b in zip(running_stats, model.vision_model.buffers()))  # BatchNorm stayed frozen
    again, _ = stage2(batches)  # another model's tower with the same weights reads the stored tokens
    assert batches.read == 3 and again.losses == fresh.losses
    (fresh_patch, fresh_captioner), (stored_patch, stored_captioner) = patch(fresh_model, None), patch(model, batches)
    assert batches.read == 6 and stored_patch.losses == fresh_patch.losses
    assert torch.equal(fresh_captioner.projection.weight, stored_captioner.projection.weight)
    # longer than stage 2 (notebook 02's per-token arms): the stored batches first, then new ones, as from images
    torch.manual_seed(0)
    longer = mb.train_patch_prefix(mb.PatchPrefixCaptioner(model.vision_model, model.language_model, model.vision_model.hidden_size),
                                   processor, world, recipe, progress=False, eval_every=5, eval_n=4, batches=batches, num_steps=5)
    torch.manual_seed(0)
    longer_fresh = mb.train_patch_prefix(mb.PatchPrefixCaptioner(fresh_model.vision_model, fresh_model.language_model,
                                                                 fresh_model.vision_model.hidden_size),
                                         processor, world, recipe, progress=False, eval_every=5, eval_n=4, num_steps=5)
    assert (batches.made, batches.read) == (5, 9) and len(longer.losses) == 5 and longer.losses == longer_fresh.losses
    with pytest.raises(ValueError, match="num_steps must be a positive int, got 0"):
        mb.train_patch_prefix(stored_captioner, processor, world, recipe, progress=False, num_steps=0)


def test_stage2_batches_refuse_other_trainings(parts, world):
    clip_model, lm, tokenizer, processor, model = parts
    batches = mb.Stage2Batches(model.vision_model, processor, world, SMALL)
    with pytest.raises(ValueError, match="batches were made for"):
        mb.train_stage2(model, processor, world, replace(SMALL, seed=1), progress=False, batches=batches)
    with pytest.raises(ValueError, match="another ShapesWorld"):
        mb.train_stage2(model, processor, ShapesWorld(image_size=32, seed=1), SMALL, progress=False, batches=batches)
    other = mb.build_blip2(SMALL, build_clip(TinyClipRecipe().model_cfg, seed=1), TinyClipRecipe().model_cfg, lm, tokenizer)
    with pytest.raises(ValueError, match="other weights"):
        mb.train_stage2(other, processor, world, SMALL, progress=False, batches=batches)
    with pytest.raises(ValueError, match="views"):
        mb.Stage2Batches(model.vision_model, processor, world, replace(SMALL, views=("rgb",)))
    with pytest.raises(TypeError, match="ClipImageTower"):
        mb.Stage2Batches(torch.nn.Identity(), processor, world, SMALL)
    assert batches.made == 0  # every refusal came before a batch was made
