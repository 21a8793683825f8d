"""The checkpoints a local hub mirror serves for the rehearsal, under the real repository ids and file names.

Each is made at test time with random weights, by the same classes the real checkpoints load into:

- open_clip's ViT-B-32 / ``laion2b_s34b_b79k`` (its repository id read from open_clip's pretrained table): the real
  architecture, fp16, as ``open_clip_model.safetensors`` (~300 MB);
- ``Salesforce/blip2-opt-2.7b``: a *tiny* ``Blip2Config`` (the config decides the size) with a byte-level BPE tokenizer
  of OPT's kind, the processor files, and the weights in two shards with their index, as the real repository has;
- ``stable-diffusion-v1-5/stable-diffusion-v1-5``: every component its ``model_index.json`` lists (tiny UNet, VAE, CLIP
  text encoder and safety checker; the CLIP tokenizer's four files; PNDM scheduler; feature extractor), in fp32 and as
  the ``fp16`` variant.

Random weights under the real ids must never reach a reader's hub cache: the rehearsal sets ``HF_HOME`` to a
temporary folder.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

BLIP2_REPO = "Salesforce/blip2-opt-2.7b"
SD_REPO = "stable-diffusion-v1-5/stable-diffusion-v1-5"
CLIP_NAME, CLIP_TAG = "ViT-B-32", "laion2b_s34b_b79k"
OPENAI_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_STD = [0.26862954, 0.26130258, 0.27577711]
WORDS = "a photo of an astronaut cup coffee cat rocket cameraman chinese temple flower red circle blue square flat colours"


def clip_repo() -> str:
    """The hub repository open_clip downloads ``ViT-B-32`` / ``laion2b_s34b_b79k`` from (its pretrained table)."""
    import open_clip

    return open_clip.get_pretrained_cfg(CLIP_NAME, CLIP_TAG)["hf_hub"].strip("/")


def build_clip(root: Path) -> Path:
    """open_clip's ViT-B-32 with random weights (the real architecture), fp16 safetensors."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    folder = root / clip_repo()
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = open_clip.create_model(CLIP_NAME)  # (151M parameters)
    save_file({k: v.half().contiguous() for k, v in model.state_dict().items()}, folder / "open_clip_model.safetensors")
    return folder


def _bpe_tokenizer(special: list[str]):
    """A byte-level BPE of GPT-2's kind (OPT's tokenizer), trained on a few words: ~300 tokens."""
    from tokenizers import ByteLevelBPETokenizer

    tok = ByteLevelBPETokenizer()
    tok.train_from_iterator([WORDS] * 4, vocab_size=300, min_frequency=1, special_tokens=special)
    return tok


def build_blip2(root: Path) -> Path:
    """A tiny ``Blip2ForConditionalGeneration`` under BLIP-2 OPT-2.7b's id: two weight shards and their index."""
    import torch
    from transformers import Blip2Config, Blip2ForConditionalGeneration, Blip2Processor, BlipImageProcessor, GPT2TokenizerFast, OPTConfig

    folder = root / BLIP2_REPO
    tokenizer = GPT2TokenizerFast(tokenizer_object=_bpe_tokenizer(["<pad>", "</s>", "<unk>"]), bos_token="</s>",
                                  eos_token="</s>", unk_token="<unk>", pad_token="<pad>")
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})  # the image token of the processor
    num_query_tokens = 4  # the real model has 32
    processor = Blip2Processor(image_processor=BlipImageProcessor(size={"height": 224, "width": 224}, image_mean=OPENAI_MEAN,
                                                                  image_std=OPENAI_STD),
                               tokenizer=tokenizer, num_query_tokens=num_query_tokens)
    text = OPTConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, ffn_dim=64, num_attention_heads=2,
                     max_position_embeddings=128, word_embed_proj_dim=32, bos_token_id=tokenizer.bos_token_id,
                     eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    config = Blip2Config(vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                                        "num_attention_heads": 2, "image_size": 224, "patch_size": 32},
                         qformer_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                                         "num_attention_heads": 2, "encoder_hidden_size": 32},
                         text_config=text.to_dict(), num_query_tokens=num_query_tokens,
                         image_token_index=tokenizer.convert_tokens_to_ids("<image>"))
    torch.manual_seed(0)
    model = Blip2ForConditionalGeneration(config)
    total = sum(p.numel() * p.element_size() for p in model.state_dict().values())
    model.save_pretrained(folder, safe_serialization=True, max_shard_size=f"{total // 2 // 1000 + 1}KB")
    processor.save_pretrained(folder)
    shards = sorted(p.name for p in folder.glob("model-*.safetensors"))
    if len(shards) < 2 or not (folder / "model.safetensors.index.json").is_file():
        raise RuntimeError(f"expected sharded weights with an index, got {shards}")
    return folder


def _clip_tokenizer_files(folder: Path) -> None:
    """The four files of the real repository's ``tokenizer/`` (vocab.json, merges.txt and two configs): every byte
    as a character, with and without CLIP's end-of-word mark, no merges."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = [chr(b) for b in printable] + [chr(256 + i) for i in range(256 - len(printable))]  # GPT-2's byte alphabet
    vocab = {tok: i for i, tok in enumerate([*chars, *(c + "</w>" for c in chars), "<|startoftext|>", "<|endoftext|>"])}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
               "unk_token": "<|endoftext|>"}
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
    (folder / "tokenizer_config.json").write_text(json.dumps({**special, "tokenizer_class": "CLIPTokenizer",
                                                              "model_max_length": 77, "do_lower_case": True,
                                                              "errors": "replace", "add_prefix_space": False}, indent=2))


def build_stable_diffusion(root: Path) -> Path:
    """A tiny Stable Diffusion v1.5 under its id: every component of ``model_index.json``, fp32 and the fp16 variant."""
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    folder = root / SD_REPO
    _clip_tokenizer_files(folder / "tokenizer")
    tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer")
    torch.manual_seed(0)
    text = CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                          num_attention_heads=2, max_position_embeddings=77, projection_dim=32,
                          bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                          pad_token_id=tokenizer.pad_token_id)
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32,
                                attention_head_dim=8, norm_num_groups=32)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 64), sample_size=16,
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        norm_num_groups=32)
    checker = StableDiffusionSafetyChecker(CLIPConfig(
        text_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": 224, "patch_size": 32},
        projection_dim=32))
    # SD v1.5's scheduler config: scaled-linear betas 0.00085..0.012, PLMS without Runge-Kutta warm-up steps
    scheduler = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
                              set_alpha_to_one=False, skip_prk_steps=True, steps_offset=1)
    extractor = CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224},
                                   image_mean=OPENAI_MEAN, image_std=OPENAI_STD)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=CLIPTextModel(text), tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=checker, feature_extractor=extractor)
    pipe.save_pretrained(folder, safe_serialization=True)
    pipe.to(dtype=torch.float16).save_pretrained(folder, safe_serialization=True, variant="fp16")
    shutil.rmtree(folder / "tokenizer")
    _clip_tokenizer_files(folder / "tokenizer")  # the real four files, not whatever this transformers writes
    return folder


def build_hub(root: Path) -> dict[str, Path]:
    """All three repositories under ``root`` (``root/{owner}/{name}/...``, as ``HubMirror`` serves them)."""
    root = Path(root)
    return {"clip": build_clip(root), "blip2": build_blip2(root), "sd": build_stable_diffusion(root)}
