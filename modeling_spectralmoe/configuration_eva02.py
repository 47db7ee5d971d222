"""Configuration of EVA02 (Fang et al., 2023), the MIM-pretrained ViT with SwiGLU MLPs and 2-D rotary embeddings."""

from transformers import PreTrainedConfig


class EVA02Config(PreTrainedConfig):
    r"""
    Configuration of an [`EVA02Model`]: a pre-norm ViT with a cls token, a learned absolute position table, 2-D
    rotary position embeddings on the patch tokens, q/v-only attention biases and SwiGLU MLPs with an inner
    LayerNorm. The defaults are EVA02-L (`eva02_large_patch14_224.mim_m38m`, about 304 M parameters).

    Args:
        hidden_size (`int`, *optional*, defaults to 1024):
            Width of the token embeddings.
        num_hidden_layers (`int`, *optional*, defaults to 24):
            Number of pre-norm transformer blocks.
        num_attention_heads (`int`, *optional*, defaults to 16):
            Attention heads per block; the head width must be a multiple of 4 (RoPE rotates pairs on two axes).
        intermediate_size (`int`, *optional*, defaults to 2730):
            Hidden width of each SwiGLU MLP (`int(hidden_size * 4 * 2 / 3)` in EVA's code).
        patch_size (`int`, *optional*, defaults to 14):
            Side of the square patch kernel (also the convolution stride). The DGSS code runs EVA02-L at 16 (EVA's
            `p14to16` checkpoint carries a kernel already resized to 16).
        image_size (`int`, *optional*, defaults to 224):
            Image side the position table is stored for: the table holds `(image_size // patch_size) ** 2` patch
            positions and is interpolated to other grids at run time.
        num_channels (`int`, *optional*, defaults to 3):
            Input bands of the patch embedding.
        pretrain_grid_size (`int`, *optional*, defaults to 16):
            Side of the patch grid the model was pretrained on (EVA's `pt_hw_seq_len`, timm's `ref_feat_shape`).
            RoPE coordinates of any `h x w` grid are rescaled to it: row `i` sits at `i / h * pretrain_grid_size`.
        layer_norm_eps (`float`, *optional*, defaults to 1e-6):
            Epsilon of every LayerNorm.
        rope_theta (`float`, *optional*, defaults to 10000.0):
            Base of the RoPE frequencies `rope_theta ** (-j / (head_dim / 4))`, `j < head_dim / 4`, per axis.
        qkv_bias (`bool`, *optional*, defaults to `True`):
            Whether the query and value projections carry a bias (the key projection never does).
        attention_inner_norm (`bool`, *optional*, defaults to `False`):
            Whether the attention output goes through a LayerNorm before the output projection (EVA's
            `inner_attn_ln`, timm's `scale_attn_inner`). The MIM-pretrained checkpoints (`eva02_L_pt_m38m_p14to16.pt`,
            timm `eva02_large_patch14_224.mim_m38m`) have none: EVA's `subln` only splits q/k/v and adds the
            SwiGLU's inner LayerNorm there. The EVA02-CLIP towers have one.
        position_interpolation (`str`, *optional*, defaults to `"timm"`):
            How the position table is resampled to an input grid other than the stored one, at run time:
            - `"timm"`: timm's `resample_abs_pos_embed` as its `Eva(dynamic_img_size=True)` runs it (bicubic with
              antialias; PyTorch's antialiased bicubic uses the a = -0.5 cubic, so it differs from `"eva"` when
              enlarging too);
            - `"eva"`: EVA's `interpolate_pos_embed` (plain bicubic, a = -0.75), which Rein-family code runs once at
              conversion time to its 32 x 32 grid (512-px crops, patch 16). With a stored 16 x 16 table and 512-px
              inputs this reproduces that converted table exactly.
        initializer_range (`float`, *optional*, defaults to 0.02):
            Standard deviation of the truncated-normal weight initialisation.
    """

    model_type = "eva02"

    hidden_size: int = 1024
    num_hidden_layers: int = 24
    num_attention_heads: int = 16
    intermediate_size: int = 2730
    patch_size: int = 14
    image_size: int = 224
    num_channels: int = 3
    pretrain_grid_size: int = 16
    layer_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    qkv_bias: bool = True
    attention_inner_norm: bool = False
    position_interpolation: str = "timm"
    initializer_range: float = 0.02


__all__ = ["EVA02Config"]
