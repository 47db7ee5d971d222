"""Configuration of DOFA, the wavelength-conditioned ViT of Xiong et al. (2024)."""

from transformers import PreTrainedConfig


class DOFAConfig(PreTrainedConfig):
    r"""
    Configuration of a [`DOFAModel`]: a ViT whose patch kernel is generated per band from the band's central
    wavelength, so one set of weights serves any sensor.

    Args:
        hidden_size (`int`, *optional*, defaults to 1024):
            Width of the token embeddings.
        num_hidden_layers (`int`, *optional*, defaults to 24):
            Number of pre-norm transformer blocks.
        num_attention_heads (`int`, *optional*, defaults to 16):
            Attention heads per block.
        intermediate_size (`int`, *optional*, defaults to 4096):
            Hidden width of each block's MLP.
        patch_size (`int`, *optional*, defaults to 16):
            Side of the square patch kernel (also the convolution stride).
        image_size (`int`, *optional*, defaults to 224):
            Image side the position embedding was trained for; other sizes are interpolated.
        layer_norm_eps (`float`, *optional*, defaults to 1e-6):
            Epsilon of every LayerNorm.
        wavelength_embed_dim (`int`, *optional*, defaults to 128):
            Width of the sin-cos wavelength embedding and of the weight generator's tokens.
        num_weight_tokens (`int`, *optional*, defaults to 128):
            Learned tokens of the weight generator.
        weight_generator_ffn_dim (`int`, *optional*, defaults to 2048):
            Feed-forward width of the weight generator's transformer layer.
        weight_generator_num_heads (`int`, *optional*, defaults to 4):
            Attention heads of the weight generator's transformer layer.
        patch_embed_padding (`int`, *optional*, defaults to 1):
            Padding of the dynamic patch convolution (the official code uses 1).
        hidden_act (`str`, *optional*, defaults to `"gelu"`):
            Activation of the block MLPs.
        qkv_bias (`bool`, *optional*, defaults to `True`):
            Whether the attention projections carry a bias.
        initializer_range (`float`, *optional*, defaults to 0.02):
            Standard deviation of the truncated-normal weight initialisation.
    """

    model_type = "dofa"

    hidden_size: int = 1024
    num_hidden_layers: int = 24
    num_attention_heads: int = 16
    intermediate_size: int = 4096
    patch_size: int = 16
    image_size: int = 224
    layer_norm_eps: float = 1e-6
    wavelength_embed_dim: int = 128
    num_weight_tokens: int = 128
    weight_generator_ffn_dim: int = 2048
    weight_generator_num_heads: int = 4
    patch_embed_padding: int = 1
    hidden_act: str = "gelu"
    qkv_bias: bool = True
    initializer_range: float = 0.02


__all__ = ["DOFAConfig"]
