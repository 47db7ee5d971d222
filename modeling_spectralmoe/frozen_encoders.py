"""The frozen foundation models of SpectralMoE, exposed layer by layer so the adapter can run after each layer."""

import copy

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModelForDepthEstimation, DINOv3ViTModel, Dinov2Model

from .configuration_dofa import DOFAConfig
from .configuration_spectralmoe import SpectralMoEConfig
from .modeling_dofa import DOFAModel, load_dofa_weights


def expand_patch_kernel(rgb_kernel: torch.Tensor, num_channels: int, rule: str) -> torch.Tensor:
    """Widens a (D, 3, p, p) RGB patch kernel to (D, C, p, p) (SPEC §3).

    `"cyclic"`: band c takes RGB kernel c mod 3 (authors' code). `"mean"`: every band takes the RGB mean x 3 / C, so
    an input whose bands all equal one grey image gives the same response as that grey image in RGB.
    """
    if rule == "cyclic":
        return rgb_kernel[:, [band % 3 for band in range(num_channels)]]
    mean = rgb_kernel.mean(1, keepdim=True) * 3 / num_channels
    return mean.expand(-1, num_channels, -1, -1).clone()


def resample_patch_kernel(kernel: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Bicubic resize of a (D, C, p, p) patch kernel to (D, C, patch_size, patch_size) (authors' grid alignment)."""
    return F.interpolate(kernel.float(), size=(patch_size, patch_size), mode="bicubic", align_corners=False).to(
        kernel.dtype
    )


class FrozenVisualEncoder(nn.Module):
    """A frozen visual foundation model run one layer at a time; one subclass per encoder family.

    `embed` gives the token sequence (prefix tokens first) and the extra arguments every layer needs (DINOv3's RoPE
    angles); `run_layer` applies one block. Subclasses set `model`, `layers`, `num_prefix_tokens` and `patch_size`.
    """

    def __init__(self, config: SpectralMoEConfig):
        super().__init__()
        self.config = config

    def run_layer(self, index: int, hidden_states: torch.Tensor, layer_kwargs: dict) -> torch.Tensor:
        return self.layers[index](hidden_states, **layer_kwargs)


class DINOv3VisualEncoder(FrozenVisualEncoder):
    """transformers' DINOv3: cls + register tokens, RoPE angles computed once per input and passed to every layer."""

    def __init__(self, config: SpectralMoEConfig):
        super().__init__(config)
        encoder_config = copy.deepcopy(config.backbone_config)
        encoder_config.num_channels = config.num_channels
        self.model = DINOv3ViTModel(encoder_config)
        self.num_prefix_tokens = 1 + encoder_config.num_register_tokens
        self.patch_size = encoder_config.patch_size

    @property
    def layers(self) -> nn.ModuleList:
        """The encoder's blocks (a property, so they are registered once, under `model`)."""
        return self.model.model.layer

    def embed(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Tokens (B, P + N, D) after the patch embedding, and the keyword arguments of every layer."""
        tokens = self.model.embeddings(pixel_values)
        return tokens, {"position_embeddings": self.model.rope_embeddings(pixel_values)}

    def load_pretrained(self, name_or_path: str) -> None:
        """Loads the released weights, widening the RGB patch kernel to the input's bands."""
        state_dict = DINOv3ViTModel.from_pretrained(name_or_path).state_dict()
        key = "embeddings.patch_embeddings.weight"
        if state_dict[key].shape[1] != self.config.num_channels:
            state_dict[key] = expand_patch_kernel(
                state_dict[key], self.config.num_channels, self.config.patch_embed_expansion
            )
        self.model.load_state_dict(state_dict)


class DOFAVisualEncoder(FrozenVisualEncoder):
    """DOFA: the patch kernel is generated from the bands' wavelengths; cls token only."""

    def __init__(self, config: SpectralMoEConfig):
        super().__init__(config)
        self.model = DOFAModel(copy.deepcopy(config.backbone_config))
        self.num_prefix_tokens = self.model.num_prefix_tokens
        self.patch_size = config.backbone_config.patch_size
        self.wavelengths = config.wavelengths

    @property
    def layers(self) -> nn.ModuleList:
        return self.model.layers

    def embed(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, dict]:
        return self.model.embeddings(pixel_values, self.wavelengths), {}

    def load_pretrained(self, name_or_path: str) -> None:
        load_dofa_weights(self.model, name_or_path)


# Chosen by `model_type`, not by config class: a model loaded as remote code imports the config and the model from
# two module copies, so the config's class is not the class this file imports.
VISUAL_ENCODER_FAMILIES = {"dinov3_vit": DINOv3VisualEncoder, DOFAConfig.model_type: DOFAVisualEncoder}


def build_visual_encoder(config: SpectralMoEConfig) -> FrozenVisualEncoder:
    """The wrapper of `config.backbone_config`'s encoder family."""
    model_type = config.backbone_config.model_type
    if model_type not in VISUAL_ENCODER_FAMILIES:
        raise ValueError(
            f"Visual encoders of type {model_type!r} are not supported; expected one of "
            f"{sorted(VISUAL_ENCODER_FAMILIES)}."
        )
    return VISUAL_ENCODER_FAMILIES[model_type](config)


class FrozenDepthEncoder(nn.Module):
    """The DINOv2 encoder of a (Prompt) Depth Anything checkpoint, run once per image without gradient.

    With `depth_grid_alignment="resample_patch_embed"` its patch kernel is resized to the visual patch size, so it sees
    the same grid as the visual encoder; its position embedding is interpolated to that grid on the fly.
    """

    num_prefix_tokens = 1

    def __init__(self, config: SpectralMoEConfig, visual_patch_size: int):
        super().__init__()
        self.model = Dinov2Model(config.depth_backbone_config)
        self.visual_patch_size = visual_patch_size
        self.alignment = config.depth_grid_alignment
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
        hidden_states = self.model.embeddings(rgb)
        outputs = []
        for layer in self.model.encoder.layer:
            hidden_states = layer(hidden_states)
            outputs.append(hidden_states)
        return outputs

    def load_pretrained(self, name_or_path: str) -> None:
        """Loads the DINOv2 backbone of a depth-estimation checkpoint; the depth head is discarded."""
        state_dict = AutoModelForDepthEstimation.from_pretrained(name_or_path).backbone.state_dict()
        key = "embeddings.patch_embeddings.projection.weight"
        target_size = self.model.embeddings.patch_embeddings.patch_size[0]
        if state_dict[key].shape[-1] != target_size:
            state_dict[key] = resample_patch_kernel(state_dict[key], target_size)
        self.model.load_state_dict(state_dict)
