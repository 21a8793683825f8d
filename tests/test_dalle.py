"""The toy DALL·E: the VQ tokenizer's round trip, the transformer's stream, and the sampler's key/value cache equal to
re-reading the whole stream at every step."""

import dataclasses

import torch

from mmlab import dalle
from mmlab.data import ShapesWorld

TINY = dataclasses.replace(dalle.TinyDalleRecipe(), vq_steps=3, gpt_steps=3, num_train_images=64, vq_batch=8, gpt_batch=8)


def test_tokens_images_and_the_stream():
    world = ShapesWorld(image_size=32, seed=0)
    model, vq_history, gpt_history = dalle.train_tiny_dalle(TINY, world=world, progress=False)
    assert len(vq_history.losses) == 3 and len(gpt_history.losses) == 3
    images = world.sample(4, "train", seed=1).images
    tokens = dalle.image_tokens(model.vq, images)
    assert tokens.shape == (4, model.grid ** 2) and model.grid == 8 and int(tokens.max()) < TINY.num_codes
    decoded = dalle.decode_tokens(model.vq, tokens, model.grid)
    assert decoded.shape == (4, 3, 32, 32) and 0 <= float(decoded.min()) and float(decoded.max()) <= 1
    prompt = model.vocab.prompt([("red", "circle")])
    assert prompt.tolist() == [[model.vocab.ids[w] for w in ("<bos>", "red", "circle", "<image>")]]
    assert min(prompt.tolist()[0]) >= TINY.num_codes  # caption words never collide with image codes
    generated = dalle.generate(model, [("red", "circle"), ("blue", "square")], torch.Generator().manual_seed(0))
    assert generated.shape == (2, 3, 32, 32)


def test_the_cached_sampler_equals_re_reading_the_stream():
    world = ShapesWorld(image_size=32, seed=0)
    vocab = dalle.CaptionVocab(world, TINY.num_codes)
    torch.manual_seed(0)
    gpt = dalle.build_transformer(TINY, len(vocab), 4 + 64).eval()
    prompt = vocab.prompt([("red", "circle"), ("green", "triangle")])
    with torch.no_grad():
        cached = dalle.sample_image_tokens(gpt, prompt, 10, TINY.num_codes, torch.Generator().manual_seed(3))
        g, stream = torch.Generator().manual_seed(3), prompt
        for _ in range(10):  # no cache: the whole stream again for every token
            probs = gpt(input_ids=stream).logits[:, -1, :TINY.num_codes].float().softmax(-1)
            stream = torch.cat([stream, torch.multinomial(probs, 1, generator=g)], dim=1)
    assert torch.equal(cached, stream[:, 4:]) and int(cached.max()) < TINY.num_codes
