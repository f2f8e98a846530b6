"""The released models' configurations (their denoisers and text encoders at the real size), as data that imports
nothing: the family specs name their real size from here (``FamilySpec.real_size``), and
:mod:`memgeo.models.architectures` builds random-weight models of them."""

__all__ = ["SD_V1_UNET_CONFIG", "VIT_L14_TEXT_CONFIG", "SDXL_UNET_CONFIG", "SD3_MEDIUM_TRANSFORMER_CONFIG"]

SD_V1_UNET_CONFIG = dict(
    act_fn="silu", attention_head_dim=8, block_out_channels=(320, 640, 1280, 1280), center_input_sample=False,
    cross_attention_dim=768,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    downsample_padding=1, flip_sin_to_cos=True, freq_shift=0, in_channels=4, layers_per_block=2,
    mid_block_scale_factor=1, norm_eps=1e-5, norm_num_groups=32, out_channels=4, sample_size=64,
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
)

VIT_L14_TEXT_CONFIG = dict(
    vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
    max_position_embeddings=77, hidden_act="quick_gelu", layer_norm_eps=1e-5, projection_dim=768,
)


#: SDXL base 1.0's UNet (stabilityai/stable-diffusion-xl-base-1.0, unet/config.json): 4x128x128 latents.
SDXL_UNET_CONFIG = dict(
    act_fn="silu", addition_embed_type="text_time", addition_embed_type_num_heads=64, addition_time_embed_dim=256,
    attention_head_dim=(5, 10, 20), block_out_channels=(320, 640, 1280), cross_attention_dim=2048,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"), downsample_padding=1,
    flip_sin_to_cos=True, freq_shift=0, in_channels=4, layers_per_block=2, mid_block_scale_factor=1, norm_eps=1e-5,
    norm_num_groups=32, out_channels=4, projection_class_embeddings_input_dim=2816, sample_size=128,
    transformer_layers_per_block=(1, 2, 10), up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    use_linear_projection=True,
)

#: Stable Diffusion 3 Medium's MMDiT (stabilityai/stable-diffusion-3-medium-diffusers, transformer/config.json):
#: 16x128x128 latents, patch 2.
SD3_MEDIUM_TRANSFORMER_CONFIG = dict(
    attention_head_dim=64, caption_projection_dim=1536, in_channels=16, joint_attention_dim=4096, num_attention_heads=24,
    num_layers=24, out_channels=16, patch_size=2, pooled_projection_dim=2048, pos_embed_max_size=192, sample_size=128,
)
