import pytest
import torch
from diffusers import DDIMScheduler

from mmlab import ldm


def test_save_and_load_components_round_trip(tmp_path):
    vae, unet = ldm.tiny_vae(seed=1), ldm.tiny_text_unet(cross_attention_dim=16, seed=1)
    scheduler = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False)
    ldm.save_components(tmp_path, vae=vae, unet=unet, scheduler=scheduler)
    assert (tmp_path / "unet" / "diffusion_pytorch_model.safetensors").exists()
    vae2, unet2, scheduler2 = ldm.load_components(tmp_path)
    z, ctx = torch.randn(2, 4, 8, 8), torch.randn(2, 5, 16)
    with torch.no_grad():
        assert torch.equal(unet.eval()(z, 3, encoder_hidden_states=ctx).sample, unet2(z, 3, encoder_hidden_states=ctx).sample)
        x = torch.rand(2, 3, 32, 32) * 2 - 1
        assert vae.eval().encode(x).latent_dist.mode().shape == (2, 4, 8, 8)  # downsampling factor 4
        assert torch.equal(vae.decode(z).sample, vae2.decode(z).sample)
    assert scheduler2.config.beta_schedule == "scaled_linear"


def test_save_rejects_non_components(tmp_path):
    with pytest.raises(TypeError, match="has no save_pretrained"):
        ldm.save_components(tmp_path, text_encoder=object())
