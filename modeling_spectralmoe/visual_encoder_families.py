"""The other frozen foundation models of the paper's Table 1: DINOv2, CLIP's vision tower and SAM's image encoder
through transformers, EVA02 through the package's own model; and the registry that picks a wrapper for
`config.backbone_config`.

Every family is built with the configured `patch_size`, `image_size` and `num_channels`. Released RGB weights of
another patch size (DINOv2's, CLIP's and EVA02's 14; the DGSS code runs them at 16) or grid are fitted on loading: the
patch kernel is widened to the bands (`patch_embed_expansion`) and resized bicubically, the position table is resized
to the configured grid, as the DGSS converters do.
"""

import copy
import os

import torch
import torch.nn.functional as F
from torch import nn
from transformers import CLIPVisionModel, Dinov2Model, PreTrainedModel, SamVisionModel

from .checkpoint_files import checkpoint_file, original_state_dict
from .configuration_dofa import DOFAConfig
from .configuration_eva02 import EVA02Config
from .configuration_spectralmoe import SAM_VISION_MODEL_TYPE, SpectralMoEConfig
from .frozen_encoders import (
    DINOv3VisualEncoder,
    DOFAVisualEncoder,
    FrozenVisualEncoder,
    dinov2_tokens,
    fit_patch_kernel,
    interpolate_dinov2_positions,
)
from .modeling_eva02 import EVA02Model, read_eva02_weights
from .position_tables import resize_cls_position_table, resize_position_grid


def encoder_config_for_bands(config: SpectralMoEConfig):
    """A copy of the visual encoder's config built for the configured bands."""
    encoder_config = copy.deepcopy(config.backbone_config)
    encoder_config.num_channels = config.num_channels
    return encoder_config


def released_library_state_dict(model_class: type[PreTrainedModel], name_or_path: str) -> dict[str, torch.Tensor]:
    """The released weights under `model_class`'s key names, at their released shapes.

    A Hub repository id or a saved folder in transformers format is read by the library class itself (a full
    `CLIPModel` or `SamModel` checkpoint gives its vision part). A publisher's original file (Meta's DINOv2 `.pth`,
    OpenAI's CLIP re-saved as tensors, SAM's `.pth`), local or on the Hub as `"owner/repo/filename"`, is renamed by
    the converter of its family (`encoder_key_maps`).
    """
    is_file = os.path.isfile(name_or_path) or (name_or_path.count("/") > 1 and not os.path.isdir(name_or_path))
    if is_file:
        return original_state_dict(model_class.config_class.model_type, checkpoint_file(name_or_path))
    return model_class.from_pretrained(name_or_path).state_dict()


class LibraryVisualEncoder(FrozenVisualEncoder):
    """A vision model class (`model_class`) built for the configured bands: by default a ViT with a cls token and
    separate q, k, v projections. Released weights are read (`read_released_weights`, by default the transformers
    class's `from_pretrained`) and fitted to the configured bands, patch size (`patch_kernel_key`) and grid
    (`fit_positions`)."""

    model_class: type[PreTrainedModel]
    patch_kernel_key: str
    lora_target_modules = ("q_proj", "v_proj")
    num_prefix_tokens = 1

    def __init__(self, config: SpectralMoEConfig):
        super().__init__(config)
        self.model = self.model_class(self.encoder_config(config))
        self.patch_size = config.backbone_config.patch_size

    def encoder_config(self, config: SpectralMoEConfig):
        """The config the model is built with: `backbone_config` for the configured bands."""
        return encoder_config_for_bands(config)

    def read_released_weights(self, name_or_path: str) -> dict[str, torch.Tensor]:
        """The released weights under `model_class`'s names, at their released shapes."""
        return released_library_state_dict(self.model_class, name_or_path)

    def released_state_dict(self, name_or_path: str) -> dict[str, torch.Tensor]:
        state_dict = self.read_released_weights(name_or_path)
        state_dict[self.patch_kernel_key] = fit_patch_kernel(state_dict[self.patch_kernel_key], self.config,
                                                             self.patch_size)
        grid = self.config.backbone_config.image_size // self.patch_size
        self.fit_positions(state_dict, (grid, grid))
        return state_dict

    def fit_positions(self, state_dict: dict[str, torch.Tensor], grid: tuple[int, int]) -> None:
        """Resizes the released position tables in `state_dict` to the configured patch grid."""
        raise NotImplementedError


class DINOv2VisualEncoder(LibraryVisualEncoder):
    """transformers' `Dinov2Model` (no registers): cls token, learned absolute positions, LayerScale.

    Loading released weights resizes the patch kernel to the configured patch size (bicubic) and the position table
    to the configured grid (bicubic to the grid size, no antialias), as the DGSS converters do (Rein's
    `convert_dinov2_large_512x512.py`: 14 -> 16, 37 x 37 -> 32 x 32). At other input grids the table is interpolated
    by `config.backbone_position_interpolation`: `"library"` (`Dinov2Embeddings`' bicubic resize to the grid) or
    `"dgss"` (DINOv2's own bicubic with scale factor (grid + 0.1) / side, which the DGSS code runs).
    """

    model_class = Dinov2Model
    patch_kernel_key = "embeddings.patch_embeddings.projection.weight"

    @property
    def layers(self) -> nn.ModuleList:
        return self.model.encoder.layer

    def embed(self, pixel_values: torch.Tensor, wavelengths=None) -> tuple[torch.Tensor, dict]:
        if self.config.backbone_position_interpolation == "dgss":
            return dinov2_tokens(self.model.embeddings, pixel_values, "dinov2"), {}
        return self.model.embeddings(pixel_values), {}

    def mlp_branch(self, index: int) -> tuple[nn.Module, nn.Module]:
        return self.layers[index].norm2, self.layers[index].layer_scale2  # after the layer scale: it would shrink it

    def fit_positions(self, state_dict: dict[str, torch.Tensor], grid: tuple[int, int]) -> None:
        key = "embeddings.position_embeddings"
        state_dict[key] = interpolate_dinov2_positions(state_dict[key], grid, "transformers")


class CLIPVisualEncoder(LibraryVisualEncoder):
    """transformers' `CLIPVisionModel` (OpenAI CLIP's vision tower): cls token, learned absolute positions,
    `pre_layrnorm` after the embeddings; `post_layernorm` and the projection are unused (features are raw layer
    outputs, as for the other families).

    Loading released weights resizes the patch kernel to the configured patch size (bicubic) and the position table
    to the configured grid **bilinearly**, as the DGSS code does (16 x 16 -> 32 x 32 for ViT-L/14 at 512 px, patch
    16). At other input grids the table is interpolated by `config.backbone_position_interpolation`: `"library"`
    (`CLIPVisionEmbeddings`' bicubic resize) or `"dgss"` (bilinear, as the DGSS code does at run time).

    Differences from the DGSS (DenseCLIP-style) code: the model runs batch-first, and the class embedding is added to
    the cls token once, as CLIP is; that code adds it twice (once as the token, once inside the position term), which
    `config.clip_class_embedding_twice` reproduces.
    """

    model_class = CLIPVisionModel
    patch_kernel_key = "embeddings.patch_embedding.weight"

    @property
    def layers(self) -> nn.ModuleList:
        return self.model.encoder.layers

    def embed(self, pixel_values: torch.Tensor, wavelengths=None) -> tuple[torch.Tensor, dict]:
        """cls + patch tokens after `pre_layrnorm`; every layer takes `attention_mask=None` (no padding)."""
        embeddings = self.model.embeddings
        if self.config.backbone_position_interpolation == "dgss":
            tokens = self.tokens_with_bilinear_positions(pixel_values)
        else:
            tokens = embeddings(pixel_values, interpolate_pos_encoding=True)
        if self.config.clip_class_embedding_twice:
            tokens = torch.cat([tokens[:, :1] + embeddings.class_embedding, tokens[:, 1:]], dim=1)
        return self.model.pre_layrnorm(tokens), {"attention_mask": None}

    def tokens_with_bilinear_positions(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """cls + patch tokens (B, 1 + N, D), the position table resized bilinearly to the input's grid."""
        embeddings = self.model.embeddings
        patches = embeddings.patch_embedding(pixel_values.to(embeddings.patch_embedding.weight.dtype))
        patches = patches.flatten(2).transpose(1, 2)
        cls_token = embeddings.class_embedding.expand(patches.shape[0], 1, -1)
        grid = [size // self.patch_size for size in pixel_values.shape[-2:]]
        positions = resize_cls_position_table(embeddings.position_embedding.weight[None], grid, "bilinear")
        return torch.cat([cls_token, patches], dim=1) + positions

    def mlp_branch(self, index: int) -> tuple[nn.Module, nn.Module]:
        return self.layers[index].layer_norm2, self.layers[index].mlp

    def fit_positions(self, state_dict: dict[str, torch.Tensor], grid: tuple[int, int]) -> None:
        key = "embeddings.position_embedding.weight"
        state_dict[key] = resize_cls_position_table(state_dict[key][None], grid, "bilinear")[0]


def resize_relative_positions(table: torch.Tensor, length: int) -> torch.Tensor:
    """A (L, head_dim) relative-position table resized linearly to `length` entries, as SAM's attention does."""
    resized = F.interpolate(table.t()[None].float(), size=length, mode="linear")
    return resized[0].t().to(table.dtype)


class SAMVisualEncoder(LibraryVisualEncoder):
    """The image encoder of transformers' `SamVisionModel` (neck unused): no prefix token, channels-last tokens
    (B, H, W, D), windowed attention except at `global_attn_indexes`, absolute positions on a (H, W) grid plus
    decomposed relative positions in attention.

    Adapters run after the global blocks only (Rein's SAM wiring), their layer index being the position in that list
    (`adapter_sites`); the tokens are flattened to (B, H * W, D) around the call. Depth-using adapters pair the global
    blocks with the depth layers at the same relative depth and need the depth encoder's width (the configuration
    refuses SAM-H, width 1280, with the 1024-wide depth encoders). VPT is refused: its prompts cannot join the
    windowed (H, W) token grid.

    Loading released weights resizes the position grid to the configured one (bicubic, no antialias, as the DGSS
    converters: 64 x 64 -> 32 x 32 for SAM-H at 512 px) and the global blocks' relative-position tables linearly to
    2 * grid - 1 entries (exactly what the attention does at run time with longer tables). `SamVisionEncoder.forward`
    refuses inputs of another size; here the position grid is resized the same way (bicubic) at run time, and the
    attention interpolates its relative-position tables itself.
    """

    model_class = SamVisionModel
    patch_kernel_key = "vision_encoder.patch_embed.projection.weight"
    lora_target_modules = ("qkv",)
    num_prefix_tokens = 0
    extra_tokens_refusal = "its layers take a (height, width) token grid with windowed attention"

    @property
    def layers(self) -> nn.ModuleList:
        return self.model.vision_encoder.layers

    def embed(self, pixel_values: torch.Tensor, wavelengths=None) -> tuple[torch.Tensor, dict]:
        """Channels-last patch tokens (B, h, w, D) plus the position grid at the input's grid."""
        encoder = self.model.vision_encoder
        projection = encoder.patch_embed.projection
        tokens = projection(pixel_values.to(projection.weight.dtype)).permute(0, 2, 3, 1)
        if encoder.pos_embed is None:
            return tokens, {}
        return tokens + resize_position_grid(encoder.pos_embed, tokens.shape[1:3], "bicubic"), {}

    def patch_tokens(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return hidden_states.flatten(1, 2)

    def with_patch_tokens(self, hidden_states: torch.Tensor, patch_tokens: torch.Tensor) -> torch.Tensor:
        return patch_tokens.reshape(hidden_states.shape)

    def mlp_branch(self, index: int) -> tuple[nn.Module, nn.Module]:
        return self.layers[index].layer_norm2, self.layers[index].mlp

    def fit_positions(self, state_dict: dict[str, torch.Tensor], grid: tuple[int, int]) -> None:
        key = "vision_encoder.pos_embed"
        if key in state_dict:
            state_dict[key] = resize_position_grid(state_dict[key], grid, "bicubic")
        for name, parameter in self.model.named_parameters():
            if name.endswith(("rel_pos_h", "rel_pos_w")) and state_dict[name].shape != parameter.shape:
                state_dict[name] = resize_relative_positions(state_dict[name], parameter.shape[0])


class EVA02VisualEncoder(LibraryVisualEncoder):
    """The package's `EVA02Model` (EVA02-L of the DGSS code, no transformers class exists): cls token, learned
    absolute positions plus 2-D RoPE on the patch tokens (passed to every layer), SwiGLU MLPs; its final norm is
    unused.

    Released weights are read by `read_eva02_weights` (a saved folder, timm's names or EVA's original names). Loading
    resizes the patch kernel to the configured patch size (bicubic; EVA's `p14to16` file is already at 16) and the
    position table to the configured grid (bicubic, no antialias), as Rein's `convert_eva2_512x512.py` does. At other
    input grids the model resamples the table itself by its `position_interpolation`: `"library"` keeps the
    configured one (timm's antialiased bicubic by default), `"dgss"` sets EVA's plain bicubic. VPT's prompts can join
    the layers: the attention rotates only the last N tokens (the patches), as DINOv3's does.
    """

    model_class = EVA02Model
    patch_kernel_key = "embeddings.patch_embeddings.weight"

    @property
    def layers(self) -> nn.ModuleList:
        return self.model.layers

    def embed(self, pixel_values: torch.Tensor, wavelengths=None) -> tuple[torch.Tensor, dict]:
        tokens, rope = self.model.embed(pixel_values)
        return tokens, {"rope": rope}

    def mlp_branch(self, index: int) -> tuple[nn.Module, nn.Module]:
        return self.layers[index].norm2, self.layers[index].mlp

    def encoder_config(self, config: SpectralMoEConfig):
        encoder_config = super().encoder_config(config)
        if config.backbone_position_interpolation == "dgss":
            encoder_config.position_interpolation = "eva"
        return encoder_config

    def read_released_weights(self, name_or_path: str) -> dict[str, torch.Tensor]:
        return read_eva02_weights(name_or_path)

    def fit_positions(self, state_dict: dict[str, torch.Tensor], grid: tuple[int, int]) -> None:
        key = "embeddings.position_embeddings"
        state_dict[key] = resize_cls_position_table(state_dict[key], grid, "bicubic")


# Chosen by `model_type`, not by config class: a model loaded as remote code imports the config and the model from
# two module copies, so the config's class is not the class this file imports.
VISUAL_ENCODER_FAMILIES = {
    "dinov3_vit": DINOv3VisualEncoder,
    DOFAConfig.model_type: DOFAVisualEncoder,
    "dinov2": DINOv2VisualEncoder,
    "clip_vision_model": CLIPVisualEncoder,
    SAM_VISION_MODEL_TYPE: SAMVisualEncoder,
    EVA02Config.model_type: EVA02VisualEncoder,
}


def build_visual_encoder(config: SpectralMoEConfig) -> FrozenVisualEncoder:
    """The wrapper of `config.backbone_config`'s encoder family."""
    model_type = config.backbone_config.model_type
    if model_type not in VISUAL_ENCODER_FAMILIES:
        raise ValueError(
            f"Visual encoders of type {model_type!r} are not supported; expected one of "
            f"{sorted(VISUAL_ENCODER_FAMILIES)}."
        )
    return VISUAL_ENCODER_FAMILIES[model_type](config)
