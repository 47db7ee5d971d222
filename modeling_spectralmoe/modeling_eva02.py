"""EVA02 (Fang et al., 2023): a pre-norm ViT with SwiGLU MLPs and 2-D rotary position embeddings, written here
because transformers has none and timm (which has one) cannot be a runtime dependency of this package.

Layer-by-layer interface (what a frozen-encoder wrapper drives):

- `tokens, rope = model.embed(pixel_values)`: tokens `(B, 1 + N, D)` (cls token first, position table added) and the
  rotary tables of that input's patch grid;
- `hidden_states = model.layers[i](hidden_states, rope=rope)` for each block (raw block outputs, no final norm);
- `model.num_prefix_tokens` (1, the cls token) and `model.patch_size`.

Numerics follow timm's `Eva` with `dynamic_img_size=True` (the test oracle):

- the position table is resampled to the input's grid with `F.interpolate(mode="bicubic", antialias=True,
  align_corners=False)` in float32, the cls row kept (timm `resample_abs_pos_embed` defaults); it is used as stored
  when the grid is the stored one. DGSS code instead resizes the table once at conversion time, plain bicubic, and
  never at run time: `position_interpolation="eva"` reproduces that (see [`EVA02Config`]);
- RoPE acts on the last `h * w` tokens only (the patches), as transformers' DINOv3 does: the cls token and any
  tokens inserted before the patches (VPT's prompts) are not rotated. Row `i` of an `h x w` grid sits at
  `i / h * pretrain_grid_size` (columns likewise), so any grid spans the pretraining range (EVA's `intp_freq`, timm's
  `ref_feat_shape`). Each head's first half rotates with the row coordinate, its second half with the column one, as
  interleaved pairs.
"""

import os
import re

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutput

from .checkpoint_files import checkpoint_file, read_saved_folder, read_state_dict_file
from .configuration_eva02 import EVA02Config
from .position_tables import resize_cls_position_table


# Tokens before the patch tokens: the cls token.
NUM_PREFIX_TOKENS = 1
# Run-time resampling of the position table: timm's (antialiased bicubic) or EVA's (plain bicubic).
POSITION_INTERPOLATIONS = ("timm", "eva")
# A timm Hub repository holds its weights under this name.
TIMM_WEIGHTS_FILE = "model.safetensors"


def resize_position_table(table: torch.Tensor, grid: tuple[int, int], method: str = "timm") -> torch.Tensor:
    """A `(1, 1 + M * M, D)` position table (cls row first) resampled to an `(h, w)` patch grid, bicubic with
    `align_corners=False` in float32: antialiased for `method="timm"` (timm's `resample_abs_pos_embed` defaults), plain
    for `"eva"` (EVA's `interpolate_pos_embed`). The table itself when `grid == (M, M)`."""
    return resize_cls_position_table(table, grid, "bicubic", antialias=method == "timm")


def rope_frequencies(config: EVA02Config) -> torch.Tensor:
    """The `head_dim / 4` rotation frequencies of one axis, `rope_theta ** (-j / (head_dim / 4))`."""
    num_frequencies = config.hidden_size // config.num_attention_heads // 4
    exponents = torch.arange(num_frequencies, dtype=torch.float32) / num_frequencies
    return 1.0 / config.rope_theta**exponents


def rope_angles(grid: tuple[int, int], frequencies: torch.Tensor, pretrain_grid_size: int) -> torch.Tensor:
    """Rotation angles `(h * w, head_dim)` of the patch tokens of an `(h, w)` grid (row-major).

    Coordinates are rescaled to the pretraining grid (`i / h * pretrain_grid_size`); each angle is repeated for the
    two members of its rotated pair, rows' angles first, then columns'.
    """
    rows, cols = (torch.arange(size, dtype=torch.float32, device=frequencies.device) / size * pretrain_grid_size
                  for size in grid)
    row_angles = (rows[:, None] * frequencies).repeat_interleave(2, dim=-1)
    col_angles = (cols[:, None] * frequencies).repeat_interleave(2, dim=-1)
    height, width = grid
    return torch.cat(
        [row_angles[:, None].expand(-1, width, -1), col_angles[None].expand(height, -1, -1)], dim=-1
    ).reshape(height * width, -1)


def rotate_pairs(hidden_states: torch.Tensor) -> torch.Tensor:
    """`[x0, x1, x2, x3, ...] -> [-x1, x0, -x3, x2, ...]`: the 90-degree turn of each interleaved pair."""
    pairs = hidden_states.unflatten(-1, (-1, 2))
    return torch.stack([-pairs[..., 1], pairs[..., 0]], dim=-1).flatten(-2)


def apply_rope(hidden_states: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Rotates the last N tokens (the patches) of `(B, heads, P + N, head_dim)` by `rope = (cos, sin)`, each
    `(N, head_dim)`; the P leading tokens (cls, and prompts an adapter inserted) are left as they are. Computed in
    float32, returned in the input's dtype."""
    cos, sin = rope
    num_patches = cos.shape[0]
    prefix, patches = hidden_states[..., :-num_patches, :], hidden_states[..., -num_patches:, :]
    rotated = (patches * cos + rotate_pairs(patches) * sin).to(hidden_states.dtype)
    return torch.cat([prefix, rotated], dim=-2)


class EVA02Embeddings(nn.Module):
    """Patch convolution, cls token, and the learned position table (resampled to the input's grid)."""

    def __init__(self, config: EVA02Config):
        super().__init__()
        self.patch_embeddings = nn.Conv2d(
            config.num_channels, config.hidden_size, kernel_size=config.patch_size, stride=config.patch_size
        )
        self.cls_token = nn.Parameter(torch.empty(1, 1, config.hidden_size))
        stored_grid = config.image_size // config.patch_size
        self.position_embeddings = nn.Parameter(torch.empty(1, 1 + stored_grid**2, config.hidden_size))
        self.position_interpolation = config.position_interpolation

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """
        Args:
            pixel_values (`torch.Tensor` of shape `(B, C, H, W)`).

        Returns:
            tokens `(B, 1 + h * w, D)` (cls first, position table added) and the grid `(h, w)`,
            `h = H // patch_size` (likewise `w`).
        """
        patches = self.patch_embeddings(pixel_values.to(self.patch_embeddings.weight.dtype))
        grid = tuple(patches.shape[-2:])
        patches = patches.flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls_token.expand(patches.shape[0], -1, -1), patches], dim=1)
        return tokens + resize_position_table(self.position_embeddings, grid, self.position_interpolation), grid


class EVA02Attention(nn.Module):
    """Self-attention with separate q/k/v projections (biases on q and v only), RoPE on the patch tokens' queries and
    keys (the last N tokens, N the RoPE tables' length), and optionally a LayerNorm before the output projection."""

    def __init__(self, config: EVA02Config):
        super().__init__()
        dim = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.q_proj = nn.Linear(dim, dim, bias=config.qkv_bias)
        self.k_proj = nn.Linear(dim, dim, bias=False)
        self.v_proj = nn.Linear(dim, dim, bias=config.qkv_bias)
        self.inner_norm = nn.LayerNorm(dim, eps=config.layer_norm_eps) if config.attention_inner_norm else None
        self.proj = nn.Linear(dim, dim)

    def forward(self, hidden_states: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """`(B, P + N, D) -> (B, P + N, D)`: P unrotated leading tokens (cls, any prompts), N patches."""
        batch, length, dim = hidden_states.shape
        query, key, value = (
            projection(hidden_states).view(batch, length, self.num_heads, -1).transpose(1, 2)
            for projection in (self.q_proj, self.k_proj, self.v_proj)
        )
        query, key = apply_rope(query, rope), apply_rope(key, rope)
        attended = F.scaled_dot_product_attention(query, key, value).transpose(1, 2).reshape(batch, length, dim)
        if self.inner_norm is not None:
            attended = self.inner_norm(attended)
        return self.proj(attended)


class EVA02SwiGLU(nn.Module):
    """SwiGLU MLP with a LayerNorm on its hidden layer: `fc2(norm(silu(fc1_g(x)) * fc1_x(x)))`."""

    def __init__(self, config: EVA02Config):
        super().__init__()
        self.fc1_g = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc1_x = nn.Linear(config.hidden_size, config.intermediate_size)
        self.norm = nn.LayerNorm(config.intermediate_size, eps=config.layer_norm_eps)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.norm(F.silu(self.fc1_g(hidden_states)) * self.fc1_x(hidden_states)))


class EVA02Layer(nn.Module):
    """Pre-norm block without LayerScale: `x + attn(norm1(x))`, then `x + mlp(norm2(x))`."""

    def __init__(self, config: EVA02Config):
        super().__init__()
        self.norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attention = EVA02Attention(config)
        self.norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = EVA02SwiGLU(config)

    def forward(self, hidden_states: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """`(B, P + N, D) -> (B, P + N, D)` (P = 1, or more with inserted prompts); `rope` as returned by
        [`EVA02Model.embed`] for this input."""
        hidden_states = hidden_states + self.attention(self.norm1(hidden_states), rope)
        return hidden_states + self.mlp(self.norm2(hidden_states))


class EVA02PreTrainedModel(PreTrainedModel):
    config_class = EVA02Config
    config: EVA02Config
    base_model_prefix = "eva02"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    _no_split_modules = ["EVA02Embeddings", "EVA02Layer"]

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, EVA02Embeddings):
            init.trunc_normal_(module.cls_token, std=self.config.initializer_range)
            init.trunc_normal_(module.position_embeddings, std=self.config.initializer_range)


class EVA02Model(EVA02PreTrainedModel):
    r"""
    The EVA02 encoder: patch embedding, cls token, learned position table, and pre-norm blocks with RoPE attention
    and SwiGLU MLPs, then a final LayerNorm. See the module docstring for the layer-by-layer interface.

    Weights: [`read_eva02_weights`] (timm or EVA's original names, or a saved folder) or `from_pretrained`.
    """

    num_prefix_tokens = NUM_PREFIX_TOKENS

    def __init__(self, config: EVA02Config):
        super().__init__(config)
        head_dim, remainder = divmod(config.hidden_size, config.num_attention_heads)
        if remainder or head_dim % 4:
            raise ValueError(
                f"EVA02 needs a head width (hidden_size / num_attention_heads) that is a multiple of 4 for its 2-D "
                f"RoPE, got hidden_size={config.hidden_size} and num_attention_heads={config.num_attention_heads}."
            )
        if config.position_interpolation not in POSITION_INTERPOLATIONS:
            raise ValueError(
                f"position_interpolation must be one of {POSITION_INTERPOLATIONS}, "
                f"got {config.position_interpolation!r}."
            )
        self.patch_size = config.patch_size
        self.embeddings = EVA02Embeddings(config)
        self.layers = nn.ModuleList(EVA02Layer(config) for _ in range(config.num_hidden_layers))
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    def rope(self, grid: tuple[int, int], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """`(cos, sin)` of the rotation angles of an `(h, w)` grid, each `(h * w, head_dim)`, float32."""
        angles = rope_angles(grid, rope_frequencies(self.config).to(device), self.config.pretrain_grid_size)
        return angles.cos(), angles.sin()

    def embed(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Tokens `(B, 1 + N, D)` and the `rope` argument of every layer for this input's grid."""
        tokens, grid = self.embeddings(pixel_values)
        return tokens, self.rope(grid, tokens.device)

    def forward(
        self,
        pixel_values: torch.Tensor,
        output_hidden_states: bool = False,
        return_dict: bool = True,
    ) -> BaseModelOutput | tuple:
        r"""
        Args:
            pixel_values (`torch.Tensor` of shape `(B, C, H, W)`): normalised bands, `C = num_channels`.
            output_hidden_states (`bool`, defaults to `False`): also return the embeddings and every block's output.
            return_dict (`bool`, defaults to `True`): return a [`BaseModelOutput`] instead of a tuple.

        Returns:
            [`BaseModelOutput`] with `last_hidden_state` `(B, 1 + N, D)` (the last block's output after the final
            norm, cls token first) and, when asked, `hidden_states`: `num_hidden_layers + 1` tensors `(B, 1 + N, D)`
            (embeddings, then each block's raw output). `N = (H // patch_size) * (W // patch_size)`.
        """
        hidden_states, rope = self.embed(pixel_values)
        all_hidden_states = (hidden_states,) if output_hidden_states else None
        for layer in self.layers:
            hidden_states = layer(hidden_states, rope=rope)
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
        last_hidden_state = self.norm(hidden_states)
        if not return_dict:
            return tuple(value for value in (last_hidden_state, all_hidden_states) if value is not None)
        return BaseModelOutput(last_hidden_state=last_hidden_state, hidden_states=all_hidden_states)


# ---------------------------------------------------------------------------------------------------------------------
# Released checkpoints: timm's names and EVA's original names

def _weight_and_bias(modules: dict[str, str]) -> dict[str, str]:
    return {f"{a}.{p}": f"{b}.{p}" for a, b in modules.items() for p in ("weight", "bias")}


_EMBEDDINGS = {
    "cls_token": "embeddings.cls_token",
    "pos_embed": "embeddings.position_embeddings",
    **_weight_and_bias({"patch_embed.proj": "embeddings.patch_embeddings"}),
}
# Released name -> EVA02Model name, outside the blocks. timm moves the MIM checkpoints' final `norm` to `fc_norm`
# (its models pool by average); either fills the final norm.
_TIMM_TENSORS = {**_EMBEDDINGS, **_weight_and_bias({"norm": "norm", "fc_norm": "norm"})}
_EVA_TENSORS = {**_EMBEDDINGS, **_weight_and_bias({"norm": "norm"})}
# Same, inside block i (`blocks.{i}.` -> `layers.{i}.`).
_SHARED_BLOCK_TENSORS = {
    "attn.q_proj.weight": "attention.q_proj.weight",
    "attn.k_proj.weight": "attention.k_proj.weight",
    "attn.v_proj.weight": "attention.v_proj.weight",
    **_weight_and_bias({"norm1": "norm1", "attn.proj": "attention.proj", "norm2": "norm2"}),
}
_TIMM_BLOCK_TENSORS = {
    **_SHARED_BLOCK_TENSORS,
    "attn.q_proj.bias": "attention.q_proj.bias",
    "attn.v_proj.bias": "attention.v_proj.bias",
    **_weight_and_bias(
        {"attn.norm": "attention.inner_norm", "mlp.fc1_g": "mlp.fc1_g", "mlp.fc1_x": "mlp.fc1_x",
         "mlp.norm": "mlp.norm", "mlp.fc2": "mlp.fc2"}
    ),
}
_EVA_BLOCK_TENSORS = {
    **_SHARED_BLOCK_TENSORS,
    "attn.q_bias": "attention.q_proj.bias",
    "attn.v_bias": "attention.v_proj.bias",
    **_weight_and_bias(
        {"attn.inner_attn_ln": "attention.inner_norm", "mlp.w1": "mlp.fc1_g", "mlp.w2": "mlp.fc1_x",
         "mlp.ffn_ln": "mlp.norm", "mlp.w3": "mlp.fc2"}
    ),
}
# Pretraining-only tensors (mask token, MIM head, classifier) and RoPE tables that EVA02Model recomputes per input.
DROPPED_KEYS = re.compile(r"mask_token|(lm_head|head)\.(weight|bias)|(blocks\.\d+\.attn\.)?rope\.\w+")

# Naming -> (tensors outside the blocks, tensors inside each block).
_NAMINGS = {"timm": (_TIMM_TENSORS, _TIMM_BLOCK_TENSORS), "eva": (_EVA_TENSORS, _EVA_BLOCK_TENSORS)}


def eva02_naming(state_dict: dict[str, torch.Tensor]) -> str:
    """`"timm"` (`attn.q_proj.bias`, `mlp.fc1_g`), `"eva"` (`attn.q_bias`, `mlp.w1`), or `"eva02"` (already
    EVA02Model's names)."""
    if any(key.startswith("layers.") for key in state_dict):
        return "eva02"
    if any(re.fullmatch(r"blocks\.\d+\.mlp\.fc1_g\.weight", key) for key in state_dict):
        return "timm"
    if any(re.fullmatch(r"blocks\.\d+\.mlp\.w1\.weight", key) for key in state_dict):
        return "eva"
    raise ValueError(
        "Not an EVA02 state dict: expected timm's `blocks.{i}.mlp.fc1_g.weight` or EVA's `blocks.{i}.mlp.w1.weight` "
        f"keys, found e.g. {sorted(state_dict)[:5]}."
    )


def convert_eva02_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Renames an EVA02 state dict from timm's names (`eva02_large_patch14_224.mim_m38m`) or EVA's original names
    (`eva02_L_pt_m38m_p14to16.pt`) to [`EVA02Model`]'s; the naming is detected (see [`eva02_naming`]).

    Shapes are kept: a patch-14 kernel stays 14 and the position table keeps its grid (resize them for another
    configuration). Pretraining-only tensors and RoPE tables are dropped (`DROPPED_KEYS`); any other key the naming
    does not know raises, as does a key the two namings of the final norm would both fill.

    Returns:
        `dict[str, torch.Tensor]`: the tensors under EVA02Model's names, for `load_state_dict(strict=True)` into a
        model of matching configuration (q and v biases on `q_proj.bias` / `v_proj.bias`; `k_proj` has no bias).
    """
    naming = eva02_naming(state_dict)
    if naming == "eva02":
        return dict(state_dict)
    tensors, block_tensors = _NAMINGS[naming]
    converted, unknown = {}, []
    for key, value in state_dict.items():
        block = re.fullmatch(r"blocks\.(\d+)\.(.+)", key)
        if block and block[2] in block_tensors:
            target = f"layers.{block[1]}.{block_tensors[block[2]]}"
        elif key in tensors:
            target = tensors[key]
        else:
            if not DROPPED_KEYS.fullmatch(key):
                unknown.append(key)
            continue
        if target in converted:
            raise ValueError(f"Two tensors of the {naming} EVA02 state dict fill {target!r} (one of them is {key!r}).")
        converted[target] = value
    if unknown:
        raise ValueError(f"Unknown keys in the {naming}-named EVA02 state dict: {sorted(unknown)}")
    return converted


def read_eva02_weights(name_or_path: str) -> dict[str, torch.Tensor]:
    """EVA02 weights under [`EVA02Model`]'s key names, at the shapes they were saved with.

    Args:
        name_or_path (`str`): one of
            - a folder written by `save_pretrained` (EVA02Model key names);
            - a local `.safetensors` or `.pt`/`.pth` file under timm's or EVA's names (tensors only; pickles that
              would run code are refused);
            - a timm Hub repository, e.g. `"timm/eva02_large_patch14_224.mim_m38m"` (its `model.safetensors`);
            - a file on the Hub as `"owner/repo/filename"`, e.g.
              `"Yuxin-CV/EVA-02/eva02/pt/eva02_L_pt_m38m_p14to16.pt"`.
    """
    if os.path.isdir(name_or_path):
        return read_saved_folder(name_or_path)
    return convert_eva02_state_dict(read_state_dict_file(checkpoint_file(name_or_path, TIMM_WEIGHTS_FILE)))


AutoConfig.register("eva02", EVA02Config, exist_ok=True)
AutoModel.register(EVA02Config, EVA02Model, exist_ok=True)


__all__ = [
    "EVA02Model", "EVA02PreTrainedModel", "convert_eva02_state_dict", "read_eva02_weights", "resize_position_table",
]
