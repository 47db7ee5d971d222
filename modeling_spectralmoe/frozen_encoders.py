"""The frozen foundation models of SpectralMoE, exposed layer by layer so the adapter can run after each layer."""

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init
from transformers import AutoModelForDepthEstimation, DINOv3ViTModel, Dinov2Model
from transformers.models.dinov3_vit.modeling_dinov3_vit import get_patches_center_coordinates

from .configuration_spectralmoe import SpectralMoEConfig, adapted_layers, paired_depth_layer
from .modeling_dofa import DOFAModel, read_dofa_weights
from .position_tables import resize_cls_position_table


def expand_patch_kernel(rgb_kernel: torch.Tensor, num_channels: int, rule: str) -> torch.Tensor:
    """Widens a (D, 3, p, p) RGB patch kernel to (D, C, p, p) for a C-band input.

    `"cyclic"`: band c takes RGB kernel c mod 3 (authors' code). `"mean"`: every band takes the RGB mean x 3 / C, so
    an input whose bands all equal one grey image gives the same response as that grey image in RGB.
    """
    if rule == "cyclic":
        return rgb_kernel[:, [band % 3 for band in range(num_channels)]]
    mean = rgb_kernel.mean(1, keepdim=True) * 3 / num_channels
    return mean.expand(-1, num_channels, -1, -1).clone()


def load_frozen_weights(module: nn.Module, state_dict: dict[str, torch.Tensor], injected: set[str]) -> None:
    """Loads released weights into a frozen encoder that an adapter may have injected parameters into.

    peft wraps a target layer `X` as `X.base_layer`, so `X.weight` of the release fills `X.base_layer.weight`. Every
    tensor of the encoder must be filled except the `injected` ones (the adapter's), and every released tensor must be
    used: after injection a non-strict load would otherwise silently load nothing.
    """
    targets = {key: key.replace(".base_layer.", ".") for key in module.state_dict() if key not in injected}
    missing = sorted(key for key, source in targets.items() if source not in state_dict)
    unused = sorted(set(state_dict) - set(targets.values()))
    if missing or unused:
        raise ValueError(
            f"The released encoder weights do not fit this encoder: {len(missing)} tensors missing "
            f"(e.g. {missing[:3]}), {len(unused)} unused (e.g. {unused[:3]})."
        )
    module.load_state_dict({key: state_dict[source] for key, source in targets.items()}, strict=False)


def resample_patch_kernel(kernel: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Bicubic resize of a (D, C, p, p) patch kernel to (D, C, patch_size, patch_size) (authors' grid alignment)."""
    return F.interpolate(kernel.float(), size=(patch_size, patch_size), mode="bicubic", align_corners=False).to(
        kernel.dtype
    )


def fit_patch_kernel(kernel: torch.Tensor, config: SpectralMoEConfig, patch_size: int) -> torch.Tensor:
    """A released RGB patch kernel widened to the configured bands (`patch_embed_expansion`) and resized to the
    encoder's patch size (both linear per band, so their order does not matter)."""
    if kernel.shape[1] != config.num_channels:
        kernel = expand_patch_kernel(kernel, config.num_channels, config.patch_embed_expansion)
    if kernel.shape[-1] != patch_size:
        kernel = resample_patch_kernel(kernel, patch_size)
    return kernel


class FrozenVisualEncoder(nn.Module):
    """A frozen visual foundation model run one layer at a time; one subclass per encoder family.

    `embed` gives the token sequence (prefix tokens first) and the extra arguments every layer needs (DINOv3's RoPE
    angles); `run_layer` applies one block. Subclasses set `model`, `layers`, `num_prefix_tokens` and `patch_size`.
    The host owns its prefix tokens: adapters see patch tokens only (`patch_tokens` / `with_patch_tokens`).
    `adapter_sites` maps each layer that carries an adapter to the depth layer feeding it (every layer, the same
    index, for a plain ViT).
    """

    # Whether the patch embedding is generated from the bands' wavelengths, so any band set can be fed per call.
    wavelength_conditioned = False
    # Why extra tokens (VPT's prompts) cannot join the layers' token sequence; `None` when they can.
    extra_tokens_refusal: str | None = None
    # The attention projections that LoRA-family methods adapt by default (q and v, or the fused qkv).
    lora_target_modules: tuple[str, ...] = ()

    def __init__(self, config: SpectralMoEConfig):
        super().__init__()
        self.config = config

    @property
    def adapter_sites(self) -> dict[int, int]:
        """Adapted visual layer -> depth layer, in layer order; an adapter's own layer index is the position here."""
        visual_config, depth_config = self.config.backbone_config, self.config.depth_backbone_config
        layers = adapted_layers(visual_config)
        if depth_config is None:
            return {index: index for index in layers}
        return {
            index: paired_depth_layer(index, visual_config.num_hidden_layers, depth_config.num_hidden_layers)
            for index in layers
        }

    def patch_tokens(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """The patch tokens (B, N, D) of a layer's output (row-major over the patch grid), prefix tokens removed."""
        return hidden_states[:, self.num_prefix_tokens:]

    def with_patch_tokens(self, hidden_states: torch.Tensor, patch_tokens: torch.Tensor) -> torch.Tensor:
        """A layer's output with its patch tokens replaced by (B, N, D) `patch_tokens`."""
        return torch.cat([hidden_states[:, :self.num_prefix_tokens], patch_tokens], dim=1)

    def run_layer(self, index: int, hidden_states: torch.Tensor, layer_kwargs: dict) -> torch.Tensor:
        return self.layers[index](hidden_states, **layer_kwargs)

    def reset_buffers(self) -> None:
        """Initialises buffers of the wrapper that a saved folder may lack (no-op unless a family has some)."""

    def mlp_branch(self, index: int) -> tuple[nn.Module, nn.Module]:
        """The modules where layer `index`'s MLP branch starts (its input is the post-attention stream) and ends
        (its output is added to that stream), for methods that act beside the MLP."""
        raise NotImplementedError

    def load_pretrained(self, name_or_path: str, injected: set[str] = frozenset()) -> None:
        """Loads the encoder's released weights; `injected` names the parameters an adapter added (left as they
        are)."""
        load_frozen_weights(self.model, self.released_state_dict(name_or_path), injected)


def rope_periods(config) -> torch.Tensor:
    """DINOv3's RoPE periods `theta ** (4 i / head_dim)`, i < head_dim / 4, as Meta's code computes them."""
    head_dim = config.hidden_size // config.num_attention_heads
    return config.rope_theta ** (torch.arange(head_dim // 4, dtype=torch.float32) * 4 / head_dim)


class DINOv3VisualEncoder(FrozenVisualEncoder):
    """transformers' DINOv3: cls + register tokens, RoPE angles computed once per input and passed to every layer.

    The RoPE periods are a persistent buffer of this wrapper (`rope_periods`), not transformers' recomputed `inv_freq`:
    Meta's checkpoints store them in bfloat16 and models built from those files (the authors' release) use the
    rounded values, so a converted folder saves and reloads exactly the periods its file holds.
    """

    def __init__(self, config: SpectralMoEConfig):
        super().__init__(config)
        encoder_config = copy.deepcopy(config.backbone_config)
        encoder_config.num_channels = config.num_channels
        self.model = DINOv3ViTModel(encoder_config)
        self.num_prefix_tokens = 1 + encoder_config.num_register_tokens
        self.patch_size = encoder_config.patch_size
        self.register_buffer("rope_periods", rope_periods(encoder_config), persistent=True)

    @property
    def layers(self) -> nn.ModuleList:
        """The encoder's blocks (a property, so they are registered once, under `model`)."""
        return self.model.model.layer

    def embed(self, pixel_values: torch.Tensor, wavelengths=None) -> tuple[torch.Tensor, dict]:
        """Tokens (B, P + N, D) after the patch embedding, and the keyword arguments of every layer (`wavelengths`
        is for wavelength-conditioned families; the kernel here is fixed to the configured bands)."""
        tokens = self.model.embeddings(pixel_values)
        return tokens, {"position_embeddings": self.rope_position_embeddings(pixel_values)}

    def rope_position_embeddings(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(cos, sin), each (h * w, head_dim), of the angles `2 pi coord / period` at the patch centres (coordinates
        in [-1, 1] per axis); the frozen encoder runs in eval mode, so coordinates are never jittered."""
        grid = [size // self.patch_size for size in pixel_values.shape[-2:]]
        coords = get_patches_center_coordinates(*grid, dtype=torch.float32, device=self.rope_periods.device)
        angles = (2 * math.pi * coords[:, :, None] / self.rope_periods[None, None, :]).flatten(1, 2).tile(2)
        return angles.cos().to(pixel_values.dtype), angles.sin().to(pixel_values.dtype)

    def reset_buffers(self) -> None:
        init.copy_(self.rope_periods, rope_periods(self.model.config))

    lora_target_modules = ("q_proj", "v_proj")

    def mlp_branch(self, index: int) -> tuple[nn.Module, nn.Module]:
        return self.layers[index].norm2, self.layers[index].layer_scale2  # after the layer scale: it would shrink it

    def released_state_dict(self, name_or_path: str) -> dict[str, torch.Tensor]:
        """The released weights, the RGB patch kernel widened to the input's bands."""
        state_dict = DINOv3ViTModel.from_pretrained(name_or_path).state_dict()
        key = "embeddings.patch_embeddings.weight"
        state_dict[key] = fit_patch_kernel(state_dict[key], self.config, self.patch_size)
        return state_dict

    def load_pretrained(self, name_or_path: str, injected: set[str] = frozenset()) -> None:
        super().load_pretrained(name_or_path, injected)
        self.rope_periods.copy_(rope_periods(self.model.config))


class DOFAVisualEncoder(FrozenVisualEncoder):
    """DOFA: the patch kernel is generated from the bands' wavelengths (the configured ones, or any per call); cls
    token only."""

    wavelength_conditioned = True

    def __init__(self, config: SpectralMoEConfig):
        super().__init__(config)
        self.model = DOFAModel(copy.deepcopy(config.backbone_config))
        self.num_prefix_tokens = self.model.num_prefix_tokens
        self.patch_size = config.backbone_config.patch_size
        self.wavelengths = config.wavelengths

    @property
    def layers(self) -> nn.ModuleList:
        return self.model.layers

    def embed(self, pixel_values: torch.Tensor, wavelengths=None) -> tuple[torch.Tensor, dict]:
        return self.model.embeddings(pixel_values, self.wavelengths if wavelengths is None else wavelengths), {}

    lora_target_modules = ("qkv",)

    def mlp_branch(self, index: int) -> tuple[nn.Module, nn.Module]:
        return self.layers[index].norm2, self.layers[index].mlp

    def released_state_dict(self, name_or_path: str) -> dict[str, torch.Tensor]:
        return read_dofa_weights(name_or_path)


# DINOv2 interpolates its position table with `scale_factor = (grid + offset) / sqrt(N)` (the offset avoids floating
# point errors in the output size); this also moves the sampling positions, so it differs from resizing to `grid`.
DINOV2_INTERPOLATE_OFFSET = 0.1


def interpolate_dinov2_positions(table: torch.Tensor, grid: tuple[int, int], method: str) -> torch.Tensor:
    """A (1, 1 + M*M, D) position table (cls first) at a (h, w) patch grid.

    `method="dinov2"` is DINOv2's own (and the authors'): bicubic with `scale_factor = (grid + 0.1) / M`, no antialias,
    in float32. `"transformers"` is `Dinov2Embeddings`': bicubic to `size=grid`. Both return the table itself when
    `grid == (M, M)`.
    """
    side = round((table.shape[1] - 1) ** 0.5)
    if tuple(grid) == (side, side):
        return table
    if method != "dinov2":
        return resize_cls_position_table(table, grid, "bicubic")
    patches = table[:, 1:].reshape(1, side, side, -1).permute(0, 3, 1, 2).float()
    scale = tuple((size + DINOV2_INTERPOLATE_OFFSET) / side for size in grid)
    patches = F.interpolate(patches, scale_factor=scale, mode="bicubic", antialias=False)
    patches = patches.to(table.dtype).permute(0, 2, 3, 1).reshape(1, -1, table.shape[-1])
    return torch.cat([table[:, :1], patches], dim=1)


def dinov2_tokens(embeddings: nn.Module, pixel_values: torch.Tensor, method: str) -> torch.Tensor:
    """cls + patch tokens (B, 1 + N, D) of transformers' `Dinov2Embeddings`, its position table interpolated to the
    input's grid by `interpolate_dinov2_positions(method)`."""
    patch_embeddings = embeddings.patch_embeddings
    patches = patch_embeddings(pixel_values.to(patch_embeddings.projection.weight.dtype))
    tokens = torch.cat([embeddings.cls_token.expand(patches.shape[0], -1, -1), patches], dim=1)
    grid = [size // patch_embeddings.patch_size[0] for size in pixel_values.shape[-2:]]
    return tokens + interpolate_dinov2_positions(embeddings.position_embeddings, grid, method)


class FrozenDepthEncoder(nn.Module):
    """The DINOv2 encoder of a (Prompt) Depth Anything checkpoint, run once per image without gradient.

    With `depth_grid_alignment="resample_patch_embed"` its patch kernel is resized to the visual patch size, so it sees
    the same grid as the visual encoder; its position table is interpolated to that grid on the fly
    (`depth_position_interpolation`).
    """

    num_prefix_tokens = 1

    def __init__(self, config: SpectralMoEConfig, visual_patch_size: int):
        super().__init__()
        self.model = Dinov2Model(config.depth_backbone_config)
        self.visual_patch_size = visual_patch_size
        self.alignment = config.depth_grid_alignment
        self.position_interpolation = config.depth_position_interpolation
        patch_embeddings = self.model.embeddings.patch_embeddings
        self.native_patch_size = patch_embeddings.patch_size[0]
        if self.alignment == "resample_patch_embed" and self.native_patch_size != visual_patch_size:
            projection = patch_embeddings.projection
            patch_embeddings.projection = nn.Conv2d(
                projection.in_channels, projection.out_channels, visual_patch_size, stride=visual_patch_size
            )
            patch_embeddings.patch_size = (visual_patch_size, visual_patch_size)

    @torch.no_grad()
    def forward(self, rgb: torch.Tensor) -> list[torch.Tensor]:
        """Raw output of every block (no final norm), each (B, 1 + N, D) on the visual patch grid."""
        if self.alignment == "resize_input":
            height, width = (size // self.visual_patch_size * self.native_patch_size for size in rgb.shape[-2:])
            rgb = F.interpolate(rgb, size=(height, width), mode="bilinear", align_corners=False)
        hidden_states = self.embed(rgb)
        outputs = []
        for layer in self.model.encoder.layer:
            hidden_states = layer(hidden_states)
            outputs.append(hidden_states)
        return outputs

    def embed(self, rgb: torch.Tensor) -> torch.Tensor:
        """cls + patch tokens (B, 1 + N, D) with the position table interpolated to the input's grid."""
        return dinov2_tokens(self.model.embeddings, rgb, self.position_interpolation)

    def load_pretrained(self, name_or_path: str) -> None:
        """Loads the DINOv2 backbone of a depth-estimation checkpoint; the depth head is discarded."""
        state_dict = AutoModelForDepthEstimation.from_pretrained(name_or_path).backbone.state_dict()
        key = "embeddings.patch_embeddings.projection.weight"
        target_size = self.model.embeddings.patch_embeddings.patch_size[0]
        if state_dict[key].shape[-1] != target_size:
            state_dict[key] = resample_patch_kernel(state_dict[key], target_size)
        self.model.load_state_dict(state_dict)
