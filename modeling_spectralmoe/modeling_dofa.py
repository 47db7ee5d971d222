"""DOFA (Xiong et al., 2024): a ViT whose patch embedding is generated per band from the band's central wavelength.

One set of weights serves any sensor: a small transformer ("weight generator") turns each band's wavelength into that
band's slice of the patch kernel, so the encoder accepts any number and order of bands as long as each band comes
with its wavelength in micrometres.
"""

import os

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel, PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_outputs import BaseModelOutput

from .configuration_dofa import DOFAConfig
from .checkpoint_files import checkpoint_file, read_saved_folder, read_state_dict_file


# The authors' kernel and bias come out of the generator x0.01 so the initial patch embedding stays small.
GENERATED_WEIGHT_SCALE = 0.01
# The weight generator is a default `nn.TransformerEncoderLayer` in the authors' code, hence torch's LayerNorm eps.
WEIGHT_GENERATOR_LAYER_NORM_EPS = 1e-5
# Above this a "wavelength" is almost surely in nanometres (DOFA's bands, SAR included, are encoded below 20 µm).
MAX_WAVELENGTH_UM = 100.0


def sincos_embedding_1d(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """Fixed sin-cos embedding of real-valued positions.

    Args:
        positions (`torch.Tensor` of shape `(M,)` or any shape, flattened): real-valued positions.
        dim (`int`): embedding width, even.

    Returns:
        `torch.Tensor` of shape `(M, dim)`: `[sin(p * w_i), cos(p * w_i)]` with `w_i = 10000^(-2i / dim)`.
    """
    if dim % 2:
        raise ValueError(f"A sin-cos embedding needs an even width, got {dim}.")
    # Computed in the positions' dtype: the authors use float32 for wavelengths and float64 for the position grid.
    exponents = torch.arange(dim // 2, dtype=positions.dtype, device=positions.device) / (dim / 2)
    angles = positions.reshape(-1, 1) * (1.0 / 10000**exponents)
    return torch.cat([angles.sin(), angles.cos()], dim=1).float()


def sincos_position_embedding_2d(grid_size: int, dim: int) -> torch.Tensor:
    """The MAE/DOFA fixed 2-D position embedding of a square grid, with a zero row for the cls token.

    Returns:
        `torch.Tensor` of shape `(1, 1 + grid_size**2, dim)`: first half encodes the column, second half the row
        (the MAE convention the checkpoints were trained with), row-major over the grid.
    """
    coords = torch.arange(grid_size, dtype=torch.float64)
    rows, cols = torch.meshgrid(coords, coords, indexing="ij")
    patches = torch.cat([sincos_embedding_1d(cols, dim // 2), sincos_embedding_1d(rows, dim // 2)], dim=1)
    return torch.cat([torch.zeros(1, dim), patches]).unsqueeze(0)


def patch_grid_size(image_size: int, patch_size: int, padding: int) -> int:
    """Side of the token grid that the padded, strided patch convolution produces for an `image_size` side."""
    return (image_size + 2 * padding - patch_size) // patch_size + 1


def as_wavelength_tensor(wavelengths, num_bands: int, device: torch.device) -> torch.Tensor:
    """Checks one central wavelength per band (micrometres) and returns them as a float32 tensor of shape `(C,)`."""
    values = torch.as_tensor(wavelengths, dtype=torch.float32, device=device)
    if values.ndim != 1:
        raise ValueError(f"`wavelengths` must be a flat list of micrometres, got shape {tuple(values.shape)}.")
    if values.numel() != num_bands:
        raise ValueError(
            f"DOFA needs one wavelength per band: got {values.numel()} wavelengths for {num_bands} bands."
        )
    if not torch.isfinite(values).all() or (values <= 0).any():
        raise ValueError(f"Wavelengths must be positive and finite (micrometres), got {values.tolist()}.")
    if (values > MAX_WAVELENGTH_UM).any():
        raise ValueError(
            f"Wavelengths are in micrometres, got {values.tolist()}; values above {MAX_WAVELENGTH_UM:g} look like "
            "nanometres (divide by 1000)."
        )
    return values


class DOFAWavelengthMLP(nn.Module):
    """Residual ReLU MLP on the wavelength embedding (authors' `fclayer`): `x + relu(fc2(relu(fc1(x))))`."""

    def __init__(self, dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, dim)
        self.fc2 = nn.Linear(dim, dim)

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return embeddings + F.relu(self.fc2(F.relu(self.fc1(embeddings))))


class DOFAWeightGeneratorLayer(nn.Module):
    """Post-norm transformer encoder layer (the authors use `nn.TransformerEncoderLayer`, GELU, no dropout)."""

    def __init__(self, dim: int, num_heads: int, ffn_dim: int):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.norm1 = nn.LayerNorm(dim, eps=WEIGHT_GENERATOR_LAYER_NORM_EPS)
        self.fc1 = nn.Linear(dim, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, dim)
        self.norm2 = nn.LayerNorm(dim, eps=WEIGHT_GENERATOR_LAYER_NORM_EPS)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """`(1, S, dim) -> (1, S, dim)`."""
        attended = self.self_attn(tokens, tokens, tokens, need_weights=False)[0]
        tokens = self.norm1(tokens + attended)
        return self.norm2(tokens + self.fc2(F.gelu(self.fc1(tokens))))


class DOFAWeightGenerator(nn.Module):
    """Turns per-band wavelength features into per-band patch kernels and one shared bias.

    The sequence `[weight tokens (T), band features (C), bias token (1)]` goes through one transformer layer; each
    band's output (plus its input, a skip connection) is projected to a flat `(k, k, D)` kernel and the bias token's
    output to a `(D,)` bias. Self-attention over the set of bands makes the result equivariant to band order.
    """

    def __init__(self, config: DOFAConfig):
        super().__init__()
        dim = config.wavelength_embed_dim
        self.weight_tokens = nn.Parameter(torch.empty(config.num_weight_tokens, dim))
        self.bias_token = nn.Parameter(torch.empty(1, dim))
        self.layer = DOFAWeightGeneratorLayer(dim, config.weight_generator_num_heads, config.weight_generator_ffn_dim)
        self.kernel_head = nn.Linear(dim, config.patch_size * config.patch_size * config.hidden_size)
        self.bias_head = nn.Linear(dim, config.hidden_size)

    def forward(self, band_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            band_features (`torch.Tensor` of shape `(C, wavelength_embed_dim)`).

        Returns:
            flat kernels `(C, k * k * D)` and bias `(D,)`, both before the x0.01 scale.
        """
        tokens = torch.cat([self.weight_tokens, band_features, self.bias_token]).unsqueeze(0)
        outputs = self.layer(tokens)[0]
        band_outputs = outputs[self.weight_tokens.shape[0] : -1]
        return self.kernel_head(band_outputs + band_features), self.bias_head(outputs[-1])


class DOFAPatchEmbeddings(nn.Module):
    """Wavelength-conditioned patch embedding: a convolution whose per-band kernels are generated on the fly."""

    def __init__(self, config: DOFAConfig):
        super().__init__()
        self.patch_size = config.patch_size
        self.padding = config.patch_embed_padding
        self.hidden_size = config.hidden_size
        self.wavelength_embed_dim = config.wavelength_embed_dim
        self.wavelength_mlp = DOFAWavelengthMLP(config.wavelength_embed_dim)
        self.weight_generator = DOFAWeightGenerator(config)
        self._cached_weights = {}

    def generate_weights(self, wavelengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Conv kernel `(D, C, k, k)` and bias `(D,)` for bands centred at `wavelengths` `(C,)` (micrometres)."""
        # The authors embed wavelengths in nanometres so that neighbouring bands differ at the sin-cos frequencies.
        features = sincos_embedding_1d(wavelengths * 1000, self.wavelength_embed_dim)
        features = self.wavelength_mlp(features.to(self.wavelength_mlp.fc1.weight.dtype))
        flat_kernels, bias = self.weight_generator(features)
        kernel = flat_kernels.view(-1, self.patch_size, self.patch_size, self.hidden_size).permute(3, 0, 1, 2)
        return kernel * GENERATED_WEIGHT_SCALE, bias * GENERATED_WEIGHT_SCALE

    def cached_weights(self, wavelengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`generate_weights`, reused per wavelength set while the generator is frozen and in eval mode: a frozen
        encoder over the windows of a scene would otherwise rerun the generator for every batch. The key holds each
        parameter's identity and version, so loading or editing weights invalidates it."""
        if self.training or any(parameter.requires_grad for parameter in self.parameters()):
            return self.generate_weights(wavelengths)
        key = (tuple(wavelengths.tolist()), wavelengths.device, *((id(p), p._version) for p in self.parameters()))
        if key not in self._cached_weights:
            self._cached_weights = {key: self.generate_weights(wavelengths)}  # one sensor at a time: keep the last
        return self._cached_weights[key]

    def forward(self, pixel_values: torch.Tensor, wavelengths: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """
        Args:
            pixel_values (`torch.Tensor` of shape `(B, C, H, W)`).
            wavelengths (`torch.Tensor` of shape `(C,)`): checked centres in micrometres.

        Returns:
            patch tokens `(B, h * w, D)` (row-major) and the grid `(h, w)`, with
            `h = (H + 2 * padding - k) // k + 1` (likewise `w`).
        """
        kernel, bias = self.cached_weights(wavelengths)
        patches = F.conv2d(pixel_values.to(kernel.dtype), kernel, bias, stride=self.patch_size, padding=self.padding)
        return patches.flatten(2).transpose(1, 2), tuple(patches.shape[-2:])


class DOFAEmbeddings(nn.Module):
    """Dynamic patch embedding, then the cls token, then the fixed sin-cos position embedding (resized to the grid)."""

    def __init__(self, config: DOFAConfig):
        super().__init__()
        self.patch_embeddings = DOFAPatchEmbeddings(config)
        self.cls_token = nn.Parameter(torch.empty(1, 1, config.hidden_size))
        self.trained_grid_size = patch_grid_size(config.image_size, config.patch_size, config.patch_embed_padding)
        # Fixed (never trained) but part of the checkpoints, so a persistent buffer.
        self.register_buffer(
            "position_embeddings",
            sincos_position_embedding_2d(self.trained_grid_size, config.hidden_size),
            persistent=True,
        )

    def resized_position_embeddings(self, grid: tuple[int, int]) -> torch.Tensor:
        """Position embedding `(1, 1 + h * w, D)` for a `(h, w)` grid: bicubic resize of the trained square grid."""
        if grid == (self.trained_grid_size, self.trained_grid_size):
            return self.position_embeddings
        cls_position, patch_positions = self.position_embeddings[:, :1], self.position_embeddings[:, 1:]
        side = self.trained_grid_size
        patch_positions = patch_positions.reshape(1, side, side, -1).permute(0, 3, 1, 2)
        patch_positions = F.interpolate(patch_positions.float(), size=grid, mode="bicubic", align_corners=False)
        patch_positions = patch_positions.to(cls_position.dtype).flatten(2).transpose(1, 2)
        return torch.cat([cls_position, patch_positions], dim=1)

    def forward(self, pixel_values: torch.Tensor, wavelengths) -> torch.Tensor:
        """
        Args:
            pixel_values (`torch.Tensor` of shape `(B, C, H, W)`): normalised bands.
            wavelengths (list, tuple or `torch.Tensor` of shape `(C,)`): central wavelength of each band, micrometres.

        Returns:
            `torch.Tensor` of shape `(B, 1 + h * w, D)`: cls token then patch tokens, position embedding added.
        """
        wavelengths = as_wavelength_tensor(wavelengths, pixel_values.shape[1], pixel_values.device)
        patches, grid = self.patch_embeddings(pixel_values, wavelengths)
        cls_tokens = self.cls_token.expand(patches.shape[0], -1, -1)
        return torch.cat([cls_tokens, patches], dim=1) + self.resized_position_embeddings(grid)


class DOFAAttention(nn.Module):
    """Multi-head self-attention with a fused qkv projection (timm layout)."""

    def __init__(self, config: DOFAConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=config.qkv_bias)
        self.proj = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """`(B, S, D) -> (B, S, D)`."""
        batch, length, dim = hidden_states.shape
        qkv = self.qkv(hidden_states).view(batch, length, 3, self.num_heads, dim // self.num_heads)
        query, key, value = qkv.permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(query, key, value)
        return self.proj(attended.transpose(1, 2).reshape(batch, length, dim))


class DOFAMLP(nn.Module):
    def __init__(self, config: DOFAConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = ACT2FN[config.hidden_act]
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(hidden_states)))


class DOFALayer(nn.Module):
    """Pre-norm ViT block (timm `Block`): `x + attn(norm1(x))`, then `x + mlp(norm2(x))`."""

    def __init__(self, config: DOFAConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attention = DOFAAttention(config)
        self.norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = DOFAMLP(config)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """`(B, S, D) -> (B, S, D)`."""
        hidden_states = hidden_states + self.attention(self.norm1(hidden_states))
        return hidden_states + self.mlp(self.norm2(hidden_states))


class DOFAPreTrainedModel(PreTrainedModel):
    config_class = DOFAConfig
    config: DOFAConfig
    base_model_prefix = "dofa"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    _no_split_modules = ["DOFAEmbeddings", "DOFALayer"]

    def _init_weights(self, module):
        super()._init_weights(module)
        std = self.config.initializer_range
        if isinstance(module, DOFAEmbeddings):
            init.normal_(module.cls_token, std=std)
            init.copy_(
                module.position_embeddings,
                sincos_position_embedding_2d(module.trained_grid_size, module.cls_token.shape[-1]),
            )
        elif isinstance(module, DOFAWeightGenerator):
            init.normal_(module.weight_tokens, std=std)
            init.normal_(module.bias_token, std=std)


class DOFAModel(DOFAPreTrainedModel):
    r"""
    The DOFA encoder: wavelength-conditioned patch embedding, cls token, fixed sin-cos position embedding and
    pre-norm transformer blocks. No final norm: the outputs are the raw block outputs that adapters and decoders read.

    Load the released weights with [`load_dofa_weights`] (official `.pth`) or `from_pretrained` (a saved folder).
    """

    # Tokens before the patch tokens: the cls token.
    num_prefix_tokens = 1

    def __init__(self, config: DOFAConfig):
        super().__init__(config)
        self.embeddings = DOFAEmbeddings(config)
        self.layers = nn.ModuleList(DOFALayer(config) for _ in range(config.num_hidden_layers))
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor,
        wavelengths,
        output_hidden_states: bool = False,
        return_dict: bool = True,
    ) -> BaseModelOutput | tuple:
        r"""
        Args:
            pixel_values (`torch.Tensor` of shape `(B, C, H, W)`): normalised bands, any `C`.
            wavelengths (list, tuple or `torch.Tensor` of shape `(C,)`): central wavelength of each band in
                micrometres, in the order of the bands.
            output_hidden_states (`bool`, defaults to `False`): also return the embeddings and every block's output.
            return_dict (`bool`, defaults to `True`): return a [`BaseModelOutput`] instead of a tuple.

        Returns:
            [`BaseModelOutput`] with `last_hidden_state` `(B, 1 + N, D)` (the last block's output, cls token
            first) and, when asked, `hidden_states`: `num_hidden_layers + 1` tensors `(B, 1 + N, D)` (embeddings,
            then each block's output). `N = h * w`, `h = (H + 2 * patch_embed_padding - patch_size) // patch_size + 1`
            (likewise `w`).
        """
        hidden_states = self.embeddings(pixel_values, wavelengths)
        all_hidden_states = (hidden_states,) if output_hidden_states else None
        for layer in self.layers:
            hidden_states = layer(hidden_states)
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
        if not return_dict:
            return tuple(value for value in (hidden_states, all_hidden_states) if value is not None)
        return BaseModelOutput(last_hidden_state=hidden_states, hidden_states=all_hidden_states)


# ---------------------------------------------------------------------------------------------------------------------
# Official checkpoints

# Pretraining-only parts of the released checkpoints (final norm, pooled norm, classifier): DOFAModel returns raw
# block outputs, so these are dropped on purpose.
DROPPED_OFFICIAL_KEYS = frozenset(f"{name}.{p}" for name in ("norm", "fc_norm", "head") for p in ("weight", "bias"))

_GENERATOR, _OUR_GENERATOR = "patch_embed.weight_generator.", "embeddings.patch_embeddings.weight_generator."
_GENERATOR_LAYER, _OUR_GENERATOR_LAYER = _GENERATOR + "transformer_encoder.layers.0.", _OUR_GENERATOR + "layer."

# Official name -> DOFAModel name of each tensor outside the blocks.
_OFFICIAL_TENSORS = {
    "cls_token": "embeddings.cls_token",
    "pos_embed": "embeddings.position_embeddings",
    _GENERATOR + "weight_tokens": _OUR_GENERATOR + "weight_tokens",
    _GENERATOR + "bias_token": _OUR_GENERATOR + "bias_token",
    _GENERATOR_LAYER + "self_attn.in_proj_weight": _OUR_GENERATOR_LAYER + "self_attn.in_proj_weight",
    _GENERATOR_LAYER + "self_attn.in_proj_bias": _OUR_GENERATOR_LAYER + "self_attn.in_proj_bias",
}
# Official module -> DOFAModel module, for modules holding a weight and a bias (Linear, LayerNorm).
_OFFICIAL_MODULES = {
    "patch_embed.fclayer.w1": "embeddings.patch_embeddings.wavelength_mlp.fc1",
    "patch_embed.fclayer.w2": "embeddings.patch_embeddings.wavelength_mlp.fc2",
    _GENERATOR + "fc_weight": _OUR_GENERATOR + "kernel_head",
    _GENERATOR + "fc_bias": _OUR_GENERATOR + "bias_head",
    _GENERATOR_LAYER + "self_attn.out_proj": _OUR_GENERATOR_LAYER + "self_attn.out_proj",
    _GENERATOR_LAYER + "norm1": _OUR_GENERATOR_LAYER + "norm1",
    _GENERATOR_LAYER + "linear1": _OUR_GENERATOR_LAYER + "fc1",
    _GENERATOR_LAYER + "linear2": _OUR_GENERATOR_LAYER + "fc2",
    _GENERATOR_LAYER + "norm2": _OUR_GENERATOR_LAYER + "norm2",
}
# Same, inside block i (`blocks.{i}.` -> `layers.{i}.`).
_OFFICIAL_BLOCK_MODULES = {
    "norm1": "norm1",
    "attn.qkv": "attention.qkv",
    "attn.proj": "attention.proj",
    "norm2": "norm2",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
}


def _official_key_map(num_layers: int) -> dict[str, str]:
    """Official key -> DOFAModel key, for a checkpoint with `num_layers` blocks."""
    modules = dict(_OFFICIAL_MODULES)
    for index in range(num_layers):
        modules.update({f"blocks.{index}.{a}": f"layers.{index}.{b}" for a, b in _OFFICIAL_BLOCK_MODULES.items()})
    weights_and_biases = {f"{a}.{p}": f"{b}.{p}" for a, b in modules.items() for p in ("weight", "bias")}
    return {**_OFFICIAL_TENSORS, **weights_and_biases}


def _num_official_blocks(keys) -> int:
    indices = [int(key.split(".")[1]) for key in keys if key.startswith("blocks.") and key.split(".")[1].isdigit()]
    return max(indices, default=-1) + 1


def convert_official_dofa_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Renames an official DOFA state dict (authors' code, `earthflow/DOFA` `.pth` files) to [`DOFAModel`]'s keys.

    The depth is read from the `blocks.{i}.*` keys. `norm.*`, `fc_norm.*` and `head.*` (pretraining head) are dropped,
    see `DROPPED_OFFICIAL_KEYS`; any other key the map does not know, and any key it expects but does not find, raises.

    Args:
        state_dict (`dict[str, torch.Tensor]`): the official state dict (`patch_embed.*`, `blocks.{i}.*`, `cls_token`,
            `pos_embed`, optionally the dropped keys).

    Returns:
        `dict[str, torch.Tensor]`: the same tensors under DOFAModel's names, ready for `load_state_dict(strict=True)`.
    """
    key_map = _official_key_map(_num_official_blocks(state_dict))
    unknown = sorted(set(state_dict) - set(key_map) - DROPPED_OFFICIAL_KEYS)
    if unknown:
        raise ValueError(f"Unknown keys in the DOFA state dict (not an official DOFA checkpoint?): {unknown}")
    missing = sorted(set(key_map) - set(state_dict))
    if missing:
        raise ValueError(f"The DOFA state dict lacks required keys: {missing}")
    return {ours: state_dict[official] for official, ours in key_map.items()}


def read_dofa_weights(name_or_path: str) -> dict[str, torch.Tensor]:
    """DOFA weights under [`DOFAModel`]'s key names.

    Args:
        name_or_path (`str`): one of
            - a folder written by `save_pretrained` (DOFAModel key names);
            - a local official `.pth` file (tensors only; pickles that would run code are refused);
            - a file on the Hub as `"owner/repo/filename"`, e.g. `"earthflow/DOFA/DOFA_ViT_large_e100.pth"`.
    """
    if os.path.isdir(name_or_path):
        return read_saved_folder(name_or_path)
    return convert_official_dofa_state_dict(read_state_dict_file(checkpoint_file(name_or_path)))


def load_dofa_weights(model: DOFAModel, name_or_path: str) -> None:
    """Loads DOFA weights (see [`read_dofa_weights`]) into `model` in place (`load_state_dict(strict=True)`)."""
    model.load_state_dict(read_dofa_weights(name_or_path), strict=True)


AutoConfig.register("dofa", DOFAConfig, exist_ok=True)
AutoModel.register(DOFAConfig, DOFAModel, exist_ok=True)


__all__ = [
    "DOFAModel", "DOFAPreTrainedModel", "convert_official_dofa_state_dict", "load_dofa_weights", "read_dofa_weights",
]
