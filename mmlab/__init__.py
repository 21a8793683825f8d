"""mmlab: runnable answers to five multimodal-ML interview questions.

What the notebooks import (the lessons and their plumbing; importing has no side effects):
    settings     -- the Settings cell: seed, threads, device, offline/pretrained decision (and why)
    claims       -- one statement per claim: check(name, value, op, bar) records and asserts; measure() only records
    data         -- ShapesWorld (the captioned shapes world), digits(), photos()
    train        -- the one training loop every notebook uses (progress bar, timing)
    plot         -- image grids, bar charts, training curves
    source       -- show(): print a library function's source on the page
    cache        -- trained tiny models, stored whole as safetensors
    files        -- atomic writes; safetensors state save/load
    provenance   -- digests of executing code (stamps), the machine and library versions
    seeds        -- print a notebook's seed table (seeds 0-4, each claim's bar and room)
    studies      -- optional measured-only studies, stored results shown by default
    clip/        -- loss (InfoNCE, SigLIP), model (tiny open_clip), views, zero_shot, training    (notebook 01, 04)
    dalle        -- a tiny DALL-E: VQ tokenizer + GPT-2 over caption-then-image tokens             (notebook 01)
    blip2/       -- the tiny BLIP-2: Q-Former stages 1 and 2, frozen LM, processor, recipe          (notebook 02)
    attribution  -- Shapley values, permutation importance, MM-SHAP                                 (notebook 03)
    fusion       -- early/late fusion models and the planted tasks                                  (notebook 03)
    zoo, vqa     -- ViT, UNITER-, LXMERT-style models, CoCa; the VQA toy                            (notebook 04)
    ddpm, ldm    -- noise schedules, samplers, guidance; the tiny VAE and text-conditioned UNet     (notebook 05)
    judge        -- a small CNN that reads an image's colour and shape (scores generated images)
    pretrained   -- the checkpoint table of the opt-in pretrained path
    exercises    -- practice: graded exercises with solutions

The command-line tooling (``mmlab run``, ``book``, ``seeds``, ``bench``, ``doctor``, …) lives in ``mmlab.tools``;
no notebook imports it.
"""

from mmlab.source import show

__version__ = "0.1.0"
__all__ = ["show"]
