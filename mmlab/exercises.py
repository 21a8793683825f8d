"""Graded exercises: write the few lines yourself, and be told at once whether they are right.

    from mmlab import exercises
    exercises.names()                  # the exercises, two or more per notebook
    exercises.hint("infonce")          # the signature and where to start
    exercises.check("infonce", fn)     # prints "correct", or raises AssertionError: which input, expected vs got, why
    exercises.solution("infonce")      # the library's reference (what CI checks in the notebooks)

``check`` draws fresh seeded inputs on every call (the seed is printed, and accepted back for a replay), covers
several sizes and the edge cases (batch 1, t = 0, a dummy player), compares with the reference library (open_clip,
diffusers, transformers) or with this library's tested function where no library has one, and recognises the classic
mistakes by name.
"""

from __future__ import annotations

import importlib
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F


def _lib(path: str) -> Callable:
    """The function ``"module:name"``, imported when first called: an exercise's reference is loaded where it is graded,
    so a notebook's stamp lists only the modules that notebook uses."""
    module, name = path.split(":")

    def call(*args, **kwargs):
        return getattr(importlib.import_module(module), name)(*args, **kwargs)

    call.__qualname__ = call.__name__ = name
    call.target = path
    return call


def _ClipLoss():  # noqa: N802 - open_clip's class, imported where an exercise is graded
    from open_clip.loss import ClipLoss

    return ClipLoss()


def _SigLipLoss():  # noqa: N802
    from open_clip.loss import SigLipLoss

    return SigLipLoss()


contrastive_loss = _lib("mmlab.clip.loss:contrastive_loss")
siglip_loss = _lib("mmlab.clip.loss:siglip_loss")
modality_shapley = _lib("mmlab.attribution:modality_shapley")
modality_interaction = _lib("mmlab.attribution:modality_interaction")
ddim_step = _lib("mmlab.ddpm:ddim_step")
classifier_free_guidance = _lib("mmlab.ddpm:classifier_free_guidance")


def _noise_schedule(*args):
    from mmlab.ddpm import NoiseSchedule

    return NoiseSchedule(*args)

Case = tuple[str, tuple]  # (what the input is, the arguments)


@dataclass(frozen=True)
class Exercise:
    """One graded exercise: its reference answer, the inputs it is checked on, and the mistakes it names."""

    name: str
    notebook: str
    signature: str
    hint: str
    solution: Callable
    reference: Callable  # the answer on the same arguments (a reference library where one has it)
    cases: Callable[[torch.Generator], list[Case]]
    mistakes: dict[str, Callable] = field(default_factory=dict)  # what a classic wrong version computes, by name


def _unit(g: torch.Generator, *shape: int) -> torch.Tensor:
    return F.normalize(torch.randn(*shape, generator=g), dim=-1)


def _feature_cases(g: torch.Generator, with_bias: bool = False) -> list[Case]:
    cases = []
    for b in (1, 3, 8):
        scale = torch.tensor(float(torch.randint(5, 20, (1,), generator=g)))
        args = (_unit(g, b, 16), _unit(g, b, 16), scale) + ((torch.tensor(-float(torch.randint(2, 10, (1,), generator=g))),)
                                                          if with_bias else ())
        cases.append((f"batch of {b} pairs, 16-d features, logit_scale {scale.item():.0f}", args))
    return cases


def _mask_cases(g: torch.Generator) -> list[Case]:
    return [(f"K={k} queries, L={n} text tokens", (k, n)) for k, n in ((1, 1), (4, 5), (int(torch.randint(2, 9, (1,), generator=g)), 3))]


def _mask(kind: str) -> Callable[[int, int], torch.Tensor]:
    def mask(k: int, n: int) -> torch.Tensor:
        # imported on use: mmlab.blip2 then enters only the stamp of the notebook that grades a mask (02)
        from mmlab.blip2.stage1 import stage1_masks

        return stage1_masks(k, torch.ones(1, n))[kind][0]
    return mask


def _with_block(kind: str, rows: str, cols: str, block: str) -> Callable[[int, int], torch.Tensor]:
    """A wrong mask: ``kind``'s mask with its (rows, cols) block ("q" queries, "t" text) set to all or causal."""
    def mask(k: int, n: int) -> torch.Tensor:
        m = _mask(kind)(k, n).clone()
        r, c = (slice(None, k) if x == "q" else slice(k, None) for x in (rows, cols))
        m[r, c] = torch.ones(k + n, k + n, dtype=torch.bool)[r, c] if block == "all" else torch.ones(n, n, dtype=torch.bool).tril()
        return m
    return mask


def _players(g: torch.Generator, m: int, n: int, k: int | None) -> tuple[Callable, dict, dict]:
    """A model with pairwise interactions over ``m`` modalities (the last one a dummy when m = 3)."""
    names = ["image", "text", "audio"][:m]
    w = torch.randn(m, k or 1, generator=g)
    inter = torch.randn(m, m, k or 1, generator=g)

    def f(inputs: dict) -> torch.Tensor:
        z = [inputs[name].mean(1) for name in names]  # (N,) per modality
        if m == 3:
            z[2] = z[2] * 0  # the audio player never matters: its Shapley value must be 0 (dummy axiom)
        out = sum(w[i] * z[i][:, None] for i in range(m)) + sum(inter[i, j] * (z[i] * z[j])[:, None]
                                                              for i in range(m) for j in range(i + 1, m))
        return out if k else out[:, 0]

    inputs = {name: torch.randn(n, 4, generator=g) for name in names}
    baselines = {name: torch.randn(4, generator=g) for name in names}
    return f, inputs, baselines


def _shapley_cases(g: torch.Generator) -> list[Case]:
    return [("2 modalities, 1 sample, output [N]", _players(g, 2, 1, None)),
            ("2 modalities, 5 samples, output [N, 3]", _players(g, 2, 5, 3)),
            ("3 modalities (audio a dummy player), 4 samples", _players(g, 3, 4, None))]


def _leave_one_out(f, inputs, baselines):
    full = f(inputs)
    return {k: full - f({**inputs, k: baselines[k].expand_as(inputs[k])}) for k in inputs}


def _marginal_only(f, inputs, baselines):
    none = f({k: b.expand_as(inputs[k]) for k, b in baselines.items()})
    return {k: f({j: inputs[j] if j == k else b.expand_as(inputs[j]) for j, b in baselines.items()}) - none for k in inputs}


def _v(f, inputs, baselines, present):
    return f({k: inputs[k] if k in present else baselines[k].expand_as(inputs[k]) for k in inputs})


def _patch_reference(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    b, c = images.shape[:2]
    p = images.unfold(2, patch_size, patch_size).unfold(3, patch_size, patch_size)  # (B, C, H/p, W/p, p, p)
    return p.permute(0, 2, 3, 1, 4, 5).reshape(b, -1, c * patch_size * patch_size)  # row-major patches, (C, p, p) each


def _patches_channel_last(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    p = images.unfold(2, patch_size, patch_size).unfold(3, patch_size, patch_size)  # (B, C, H/p, W/p, p, p)
    return p.permute(0, 2, 3, 4, 5, 1).reshape(len(images), -1, images.shape[1] * patch_size * patch_size)


def _recall_reference(image_features: torch.Tensor, text_features: torch.Tensor, k: int) -> float:
    topk = (image_features @ text_features.T).topk(k, dim=1).indices  # (N, k) texts nearest each image
    return (topk == torch.arange(len(image_features))[:, None]).any(1).float().mean().item()


def _recall_cases(g: torch.Generator) -> list[Case]:
    """A hand-made case where the directions and k differ for sure, then random captions near their images."""
    scores = torch.tensor([[0.9, 0.95, 0.0], [0.0, 0.96, 0.0], [0.0, 0.0, 0.9]])  # image 0's caption is its 2nd best
    cases = [("3 hand-made pairs (image @ text.T = a fixed score table), k=1", (torch.eye(3), scores.T.contiguous(), 1))]
    for n, k in ((1, 1), (12, 1), (30, 3)):
        images = _unit(g, n, 8)
        texts = F.normalize(images + 0.6 * torch.randn(n, 8, generator=g), dim=-1)
        texts[0] = F.normalize(images.sum(0), dim=0)
        cases.append((f"{n} pairs, k={k}", (images, texts, k)))
    return cases


def _scheduler(name: str = "DDPMScheduler", **kw):
    import diffusers  # here: only the diffusion exercises need it

    return getattr(diffusers, name)(num_train_timesteps=1000, beta_schedule="linear", clip_sample=False, **kw)


def _q_sample_cases(g: torch.Generator) -> list[Case]:
    abar = _scheduler().alphas_cumprod
    out = []
    for b, ts in ((1, [0]), (4, [0, 1, 500, 999]), (3, torch.randint(1000, (3,), generator=g).tolist())):
        x0, noise = torch.randn(b, 1, 4, 4, generator=g), torch.randn(b, 1, 4, 4, generator=g)
        out.append((f"batch {b}, t = {ts}", (x0, torch.tensor(ts), noise, abar)))
    return out


def _ddim_cases(g: torch.Generator) -> list[Case]:
    abar = _scheduler().alphas_cumprod
    return [(f"50-step grid, t = {t} -> {p}", (torch.randn(2, 1, 4, 4, generator=g), t, p, torch.randn(2, 1, 4, 4, generator=g), abar))
            for t, p in ((980, 960), (500, 480), (20, 0), (0, -1))]


def _ddim_reference(model_output, t, prev_t, x_t, alphas_cumprod):
    ref = _scheduler("DDIMScheduler", set_alpha_to_one=True)
    ref.set_timesteps(1000 // (t - prev_t) if prev_t >= 0 else 50)
    return ref.step(model_output, t, x_t).prev_sample


def _ddim_wrong_alpha(model_output, t, prev_t, x_t, alphas_cumprod):
    a_t, a_prev = alphas_cumprod[t], alphas_cumprod[max(t - 1, 0)] if prev_t >= 0 else torch.tensor(1.0)
    x0 = (x_t - (1 - a_t) ** 0.5 * model_output) / a_t**0.5
    return a_prev**0.5 * x0 + (1 - a_prev) ** 0.5 * model_output


def _guidance_cases(g: torch.Generator) -> list[Case]:
    return [(f"scale {s}", (torch.randn(2, 4, generator=g), torch.randn(2, 4, generator=g), s)) for s in (0.0, 1.0, 7.5)]


EXERCISES: dict[str, Exercise] = {ex.name: ex for ex in [
    Exercise("infonce", "01", "infonce(image_features, text_features, logit_scale) -> scalar",
             "L2-normalised (B, D) features; logits = logit_scale * image @ text.T; cross-entropy with the diagonal as "
             "targets, over rows AND columns, averaged.",
             contrastive_loss, lambda i, t, s: _ClipLoss()(i, t, s), _feature_cases,
             {"one direction only (image -> text): CLIP's loss is symmetric":
                  lambda i, t, s: F.cross_entropy(s * i @ t.T, torch.arange(len(i))),
              "no temperature: the cosine similarities must be multiplied by logit_scale":
                  lambda i, t, s: contrastive_loss(i, t, 1.0)}),
    Exercise("siglip_loss", "01", "siglip_loss(image_features, text_features, logit_scale, logit_bias) -> scalar",
             "Every (image, text) pair is a binary problem: logits = scale * cos + bias, label +1 on the diagonal and -1 "
             "elsewhere, loss = -logsigmoid(label * logit) summed over all B² pairs and divided by B.",
             siglip_loss, lambda i, t, s, b: _SigLipLoss()(i, t, s, b), lambda g: _feature_cases(g, with_bias=True),
             {"a softmax over the batch (that is CLIP's InfoNCE, not SigLIP)": lambda i, t, s, b: _ClipLoss()(i, t, s),
              "averaged over the B² pairs instead of divided by B": lambda i, t, s, b: siglip_loss(i, t, s, b) / len(i),
              "no bias": lambda i, t, s, b: siglip_loss(i, t, s, 0.0)}),
    Exercise("itc_mask", "02", "itc_mask(num_query_tokens, text_length) -> (K+L, K+L) bool, True = may attend",
             "ITC compares the queries' outputs with the text's: neither may see the other, or the answer leaks. "
             "Queries see queries, text sees all text (no causal mask).",
             _mask("itc"), _mask("itc"), _mask_cases,
             {"a causal text mask: ITC needs none (that is ITG's)": _with_block("itc", "t", "t", "causal"),
              "everything sees everything (that is ITM's mask)": _mask("itm")}),
    Exercise("itg_mask", "02", "itg_mask(num_query_tokens, text_length) -> (K+L, K+L) bool, True = may attend",
             "Queries see all queries and no text; text sees every query and the text up to itself (causal).",
             _mask("itg"), _mask("itg"), _mask_cases,
             {"queries see the text: then generating it is a copy task": _with_block("itg", "q", "t", "all"),
              "text is not causal: each word sees the words it must predict": _with_block("itg", "t", "t", "all")}),
    Exercise("modality_shapley", "03", "modality_shapley(f, inputs, baselines) -> {modality: tensor like f's output}",
             "For each modality i: sum over coalitions S without i of |S|!(M-|S|-1)!/M! * (v(S+i) - v(S)), with "
             "v(S) = f(inputs in S, baselines elsewhere; baselines are one sample, broadcast over N).",
             modality_shapley, modality_shapley, _shapley_cases,
             {"leave-one-out (v(all) - v(all without i)): no coalition weights": _leave_one_out,
              "only the first coalition (v({i}) - v(empty))": _marginal_only}),
    Exercise("modality_interaction", "03", "modality_interaction(f, inputs, baselines) -> tensor like f's output",
             "Two modalities a, b: v({a,b}) - v({a}) - v({b}) + v(empty); negative when either one suffices.",
             modality_interaction, modality_interaction, lambda g: _shapley_cases(g)[:2],
             {"without the + v(empty) term": lambda f, x, b: _v(f, x, b, set(x)) - _v(f, x, b, {"image"}) - _v(f, x, b, {"text"}),
              "the sign flipped": lambda f, x, b: -modality_interaction(f, x, b)}),
    Exercise("patchify", "04", "patchify(images, patch_size) -> (B, N, C * p * p)",
             "Cut (B, C, H, W) into p x p patches in row-major order (left to right, then down); flatten each patch "
             "channel-first, as a Conv2d(C, D, p, stride=p) reads it — ViT's patch embedding is that conv.",
             _patch_reference, _patch_reference,
             lambda g: [(f"{b} image(s) {c}x{h}x{h}, patch {p}", (torch.randn(b, c, h, h, generator=g), p))
                        for b, c, h, p in ((1, 1, 4, 2), (2, 3, 8, 4), (3, 3, 12, 4))],
             {"patches in column-major order": lambda x, p: _patch_reference(x.transpose(2, 3), p),
              "each patch flattened channel-last": _patches_channel_last}),
    Exercise("recall_at_k", "04", "recall_at_k(image_features, text_features, k) -> float (image -> text)",
             "Image i's caption is text i. Score every image against every text; count image i right when text i is "
             "among its k highest scores.",
             _recall_reference, _recall_reference,
             _recall_cases,
             {"text -> image instead of image -> text": lambda i, t, k: _recall_reference(t, i, k),
              "top k + 1": lambda i, t, k: _recall_reference(i, t, min(k + 1, len(i)))}),
    Exercise("q_sample", "05", "q_sample(x0, t, noise, alphas_cumprod) -> x_t",
             "x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise, with abar_t = alphas_cumprod[t] broadcast over (C, H, W).",
             lambda x0, t, e, a: _noise_schedule(1000, "linear").q_sample(x0, t, e),
             lambda x0, t, e, a: _scheduler().add_noise(x0, e, t), _q_sample_cases,
             {"no square roots": lambda x0, t, e, a: a[t].view(-1, 1, 1, 1) * x0 + (1 - a[t]).view(-1, 1, 1, 1) * e,
              "the two weights swapped": lambda x0, t, e, a: (1 - a[t]).sqrt().view(-1, 1, 1, 1) * x0 + a[t].sqrt().view(-1, 1, 1, 1) * e}),
    Exercise("ddim_step", "05", "ddim_step(model_output, t, prev_t, x_t, alphas_cumprod) -> x_prev (eta = 0)",
             "x0_hat = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t); x_prev = sqrt(abar_prev) x0_hat + sqrt(1 - abar_prev) eps, "
             "with abar_prev = alphas_cumprod[prev_t] (the previous step on the grid, not t - 1), and 1 when prev_t = -1.",
             lambda e, t, p, x, a: ddim_step(_noise_schedule(1000, "linear"), e, t, p, x), _ddim_reference, _ddim_cases,
             {"abar of the wrong step (t - 1 instead of prev_t)": _ddim_wrong_alpha,
              "returns x0_hat, not x_prev": lambda e, t, p, x, a: (x - (1 - a[t]) ** 0.5 * e) / a[t] ** 0.5}),
    Exercise("classifier_free_guidance", "05", "classifier_free_guidance(eps_uncond, eps_cond, guidance_scale) -> eps",
             "diffusers and Stable Diffusion: eps_uncond + s (eps_cond - eps_uncond); s = 0 ignores the prompt, s = 1 is "
             "the conditional model.",
             classifier_free_guidance, lambda u, c, s: u + s * (c - u), _guidance_cases,
             {"s and w confused: Ho & Salimans' (1 + w) eps_cond - w eps_uncond with w = s": lambda u, c, s: (1 + s) * c - s * u,
              "conditional and unconditional swapped": lambda u, c, s: c + s * (u - c)}),
]}


def names() -> list[str]:
    """The exercises, in notebook order."""
    return list(EXERCISES)


def _get(name: str) -> Exercise:
    if name not in EXERCISES:
        raise ValueError(f"no exercise named {name!r}; choose one of {names()}")
    return EXERCISES[name]


def hint(name: str) -> str:
    """The signature and the idea to write."""
    ex = _get(name)
    return f"{ex.signature}\n{ex.hint}"


def solution(name: str) -> Callable:
    """The reference answer (the library's own function)."""
    answer = _get(name).solution
    if hasattr(answer, "target"):  # imported now, where it is asked for
        module, attr = answer.target.split(":")
        return getattr(importlib.import_module(module), attr)
    return answer


def _close(got, expected) -> bool:
    if isinstance(expected, dict):
        return isinstance(got, dict) and set(got) == set(expected) and all(_close(got[k], expected[k]) for k in expected)
    if isinstance(expected, torch.Tensor):
        if not isinstance(got, torch.Tensor) or got.shape != expected.shape:
            return False
        if expected.dtype == torch.bool:
            return got.dtype == torch.bool and torch.equal(got, expected)
        return torch.allclose(got.float(), expected.float(), rtol=1e-4, atol=1e-5)
    try:
        return abs(float(got) - float(expected)) <= 1e-5 + 1e-4 * abs(float(expected))
    except (TypeError, ValueError):
        return False


def _describe(x) -> str:
    if isinstance(x, dict):
        return "{" + ", ".join(f"{k}: {_describe(v)}" for k, v in x.items()) + "}"
    if isinstance(x, torch.Tensor):
        if x.numel() == 1:
            return f"{x.item():.6g}"
        head = x.flatten()[:4].tolist()
        return f"tensor{tuple(x.shape)} {x.dtype} starting {[round(v, 4) if isinstance(v, float) else v for v in head]}"
    return repr(x)


def _try(fn: Callable, args: tuple):
    try:
        return fn(*args)
    except Exception:  # noqa: BLE001 - only used to compare with a known mistake
        return None


def check(name: str, fn: Callable, seed: int | None = None) -> None:
    """Check ``fn`` against the reference on fresh inputs; print "correct", or raise AssertionError saying why."""
    ex = _get(name)
    if not callable(fn):
        raise TypeError(f"fn must be your function, got {type(fn).__name__}")
    seed = random.SystemRandom().randrange(10**6) if seed is None else seed
    cases = ex.cases(torch.Generator().manual_seed(seed))
    for label, args in cases:
        expected = ex.reference(*args)
        try:
            got = fn(*args)
        except NotImplementedError:
            raise AssertionError(f"{name}: not written yet (NotImplementedError). {hint(name)}") from None
        except Exception as exc:  # noqa: BLE001 - the learner's code may raise anything; say where
            raise AssertionError(f"{name}: raised {type(exc).__name__}: {exc} on {label} (seed {seed})") from exc
        if not _close(got, expected):
            known = [why for why, wrong in ex.mistakes.items() if all(_close(_try(fn, a), wrong(*a)) for _, a in cases)]
            diagnosis = f"This looks like a classic mistake: {' / '.join(known)}." if known else f"Hint: {ex.hint}"
            raise AssertionError(f"{name} is not right on {label} (seed {seed}, replay with check(..., seed={seed})): "
                                 f"expected {_describe(expected)}, got {_describe(got)}. {diagnosis}")
    print(f"correct: {name}, {len(cases)} cases (seed {seed})")


def attempt(name: str, fn: Callable, seed: int | None = None) -> bool:
    """Check *your* ``fn`` and print the verdict — "correct", or which input broke and why — without raising."""
    try:
        check(name, fn, seed)
    except AssertionError as err:
        print(err)
        return False
    return True
