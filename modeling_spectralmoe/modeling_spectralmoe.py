"""SpectralMoE for semantic segmentation: frozen visual + depth encoders, the dual-gated MoE adapter, Mask2Former."""

import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import AutoConfig, AutoModelForSemanticSegmentation, PreTrainedModel
from transformers.utils import ModelOutput

from .configuration_spectralmoe import SpectralMoEConfig, rgb_band_indices
from .adaptformer_adapter import AdaptFormerAdapter
from .fada_adapter import FADAAdapter
from .frozen_baseline_adapter import FrozenBaselineAdapter
from .frozen_encoders import FrozenDepthEncoder
from .lora_adapter import LoRAAdapter
from .mask2former_head import SpectralMoEMask2FormerHead
from .rein_adapter import ReinAdapter
from .set_adapter import SETAdapter
from .spectralmoe_adapter import SpectralMoEAdapter
from .stac_mlm import write_stac_mlm
from .visual_encoder_families import build_visual_encoder
from .vpt_adapter import VPTAdapter


FROZEN_PREFIXES = ("visual_encoder.", "depth_encoder.")
FEATURE_SCALES = (4.0, 2.0, 1.0, 0.5)  # strides 4, 8, 16, 32 from the patch-16 grid
ADAPTERS = {
    "spectralmoe": SpectralMoEAdapter, "rein": ReinAdapter, "depthforge": ReinAdapter, "frozen": FrozenBaselineAdapter,
    "set": SETAdapter, "fada": FADAAdapter, "lora": LoRAAdapter, "dora": LoRAAdapter, "adaptformer": AdaptFormerAdapter,
    "vpt": VPTAdapter,
}


@dataclass
class SpectralMoESemanticSegmenterOutput(ModelOutput):
    r"""
    Output of [`SpectralMoEForSemanticSegmentation`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `labels` are given):
            Weighted Mask2Former loss (class, mask, dice over every decoder layer) plus `aux_loss`.
        logits (`torch.FloatTensor` of shape `(batch_size, num_labels, height, width)`, *optional*):
            Per-class scores at the input resolution: softmax class probabilities (no-object dropped) times sigmoid
            masks, summed over queries. Argmax over dim 1 gives the label map. Built in eval mode, or when asked
            with `output_logits=True` (the loss does not use them; they cost about 0.4 GB per batch of 4 at 512²).
        class_queries_logits (`torch.FloatTensor` of shape `(batch_size, num_queries, num_labels + 1)`):
            Class logits of each query after the last decoder layer (last entry = no object).
        masks_queries_logits (`torch.FloatTensor` of shape `(batch_size, num_queries, height / 4, width / 4)`):
            Mask logits of each query after the last decoder layer.
        aux_loss (`torch.FloatTensor` of shape `()`):
            Load-balancing loss of the adapter, averaged over layers.
        visual_router_probs (`tuple(torch.FloatTensor)`, *optional*, returned with `output_router_probs=True`):
            One tensor per adapted layer of shape `(batch_size, num_patches, num_experts)`: the gates of the visual
            patch tokens (k non-zero entries per token, summing to 1). `None` for methods that route nothing.
        depth_router_probs (`tuple(torch.FloatTensor)`, *optional*, returned with `output_router_probs=True`):
            The same for the depth patch tokens; `None` when no depth tokens are routed.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    class_queries_logits: torch.FloatTensor | None = None
    masks_queries_logits: torch.FloatTensor | None = None
    aux_loss: torch.FloatTensor | None = None
    visual_router_probs: tuple[torch.FloatTensor, ...] | None = None
    depth_router_probs: tuple[torch.FloatTensor, ...] | None = None


class SpectralMoEPreTrainedModel(PreTrainedModel):
    config_class = SpectralMoEConfig
    base_model_prefix = "spectralmoe"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    # The frozen encoders are reloaded from their own checkpoints; their absence from a saved folder is expected.
    _keys_to_ignore_on_load_missing = [r"^visual_encoder\.", r"^depth_encoder\."]

    def _init_weights(self, module: nn.Module) -> None:
        """Only our own composite modules carry an init scheme (the paper's and Mask2Former's); the encoders are
        `PreTrainedModel`s and initialise themselves, their wrappers only the buffers they add."""
        if any(module is getattr(self, name, None) for name in ("adapter", "decode_head", "depth_projection")):
            module.reset_parameters()
        elif module is getattr(self, "visual_encoder", None):
            module.reset_buffers()


class SpectralMoEForSemanticSegmentation(SpectralMoEPreTrainedModel):
    r"""
    SpectralMoE (Chen et al., CVPR 2026): a frozen visual foundation model (DINOv3, DOFA, DINOv2, CLIP, SAM or EVA02)
    whose patch tokens are adjusted after every layer (SAM: after its global-attention blocks) by a dual-gated
    mixture-of-experts adapter fed with the tokens of a frozen depth foundation model, followed by a Mask2Former
    head. Only the adapter and the head (and `depth_projection`, when configured) are trained. With
    `config.adapter_type` `"rein"`, `"depthforge"` or `"frozen"` the same pipeline trains the paper's baselines.

    `Model(config)` builds every part with random weights and never downloads; `load_pretrained_encoders()` fills the
    frozen encoders from `config.backbone` / `config.depth_backbone`; `from_pretrained` loads a trained adapter and
    head and then the encoders the same way, unless the folder holds them too.
    """

    def __init__(self, config: SpectralMoEConfig):
        super().__init__(config)
        self.visual_encoder = build_visual_encoder(config)
        self.depth_encoder = (
            FrozenDepthEncoder(config, self.visual_encoder.patch_size) if config.uses_depth else None
        )
        for encoder in self.frozen_encoders():
            encoder.requires_grad_(False)
        self.depth_projection = None
        if self.depth_encoder is not None and config.depth_projection:
            self.depth_projection = nn.Linear(
                config.depth_backbone_config.hidden_size, config.backbone_config.hidden_size
            )
        self.adapter = ADAPTERS[config.adapter_type].from_config(config)
        self.adapter.attach(self.visual_encoder)  # after freezing: parameters it injects into the encoder train
        hidden_size = config.backbone_config.hidden_size
        self.decode_head = SpectralMoEMask2FormerHead(config, in_channels=[hidden_size] * len(FEATURE_SCALES))
        self.post_init()

    def frozen_encoders(self) -> list[nn.Module]:
        return [encoder for encoder in (self.visual_encoder, self.depth_encoder) if encoder is not None]

    def train(self, mode: bool = True):
        """Frozen encoders stay in eval mode: DINOv3 jitters its RoPE coordinates in train mode."""
        super().train(mode)
        for encoder in self.frozen_encoders():
            encoder.eval()
        return self

    def load_pretrained_encoders(self) -> None:
        """Loads the frozen encoders' released weights from `config.backbone` and `config.depth_backbone` (Hub id or
        local path): the start of a new training, or the completion of an adapter-only checkpoint."""
        if not self.has_named_encoders():
            raise ValueError(
                "`config.backbone` / `config.depth_backbone` name no checkpoint: these encoders are random and "
                "exist only in a folder saved with their weights."
            )
        for name in ("backbone", "depth_backbone") if self.depth_encoder is not None else ("backbone",):
            _check_local_checkpoint(name, getattr(self.config, name))
        self.visual_encoder.load_pretrained(self.config.backbone, set(self.adapter.encoder_parameter_names()))
        if self.depth_encoder is not None:
            self.depth_encoder.load_pretrained(self.config.depth_backbone)

    def no_weight_decay(self) -> set[str]:
        """Full names of the trainable parameters that train without weight decay, as the adapter and the head
        declare them."""
        declared = {f"adapter.{name}" for name in self.adapter.no_weight_decay()}
        declared |= {f"decode_head.{name}" for name in self.decode_head.no_weight_decay()}
        return {name for name, parameter in self.named_parameters() if parameter.requires_grad and name in declared}

    def has_named_encoders(self) -> bool:
        """Whether every frozen encoder comes from a named checkpoint (else it is random and must be saved)."""
        depth_named = self.depth_encoder is None or self.config.depth_backbone is not None
        return self.config.backbone is not None and depth_named

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        wavelengths: list[float] | torch.Tensor | None = None,
        band_names: list[str] | None = None,
        output_router_probs: bool = False,
        output_logits: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> SpectralMoESemanticSegmenterOutput:
        r"""
        Args:
            pixel_values (`torch.FloatTensor` of shape `(batch_size, num_channels, height, width)`):
                Normalised bands (see [`SpectralMoEImageProcessor`]); height and width multiples of the patch size.
            labels (`torch.LongTensor` of shape `(batch_size, height, width)`, *optional*):
                Class index per pixel, 255 = ignore.
            wavelengths (`list[float]` or `torch.Tensor` of shape `(num_channels,)`, *optional*):
                Central wavelength (micrometres) of each band of this batch, for a sensor other than the configured
                one; wavelength-conditioned encoders (DOFA) only. Defaults to `config.wavelengths`.
            band_names (`list[str]`, *optional*):
                Names of this batch's bands; with `wavelengths`, they pick the depth encoder's R, G, B bands (else
                the bands nearest 665, 560, 490 nm do).
            output_router_probs (`bool`, *optional*, defaults to `False`):
                Also return every adapted layer's gate probabilities of both modalities.
            output_logits (`bool`, *optional*):
                Build the full-resolution `logits`; defaults to `True` in eval mode and `False` in training mode.
            kwargs:
                Other outputs of the image processor, ignored: its `pixel_mask` is already encoded in `labels`
                (no-data and padding are 255) and padded pixels are 0 after normalisation.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        output_logits = not self.training if output_logits is None else output_logits
        bands = self._band_setup(wavelengths, band_names)
        self._check_pixel_values(pixel_values, bands["num_channels"])
        if labels is not None and labels.shape != (pixel_values.shape[0], *pixel_values.shape[-2:]):
            raise ValueError(
                f"labels must have shape (batch, height, width) = {(pixel_values.shape[0], *pixel_values.shape[-2:])} "
                f"to match pixel_values, found {tuple(labels.shape)}."
            )
        features, aux_loss, visual_gates, depth_gates = self.encode(
            pixel_values, output_router_probs, bands["wavelengths"], bands["depth_rgb_bands"]
        )
        head_outputs = self.decode_head(features, self.adapter.query_embeddings())
        logits = None
        if output_logits:
            logits = self.decode_head.semantic_logits(
                head_outputs.class_queries_logits, head_outputs.masks_queries_logits, pixel_values.shape[-2:]
            )
        loss = None
        if labels is not None:
            loss = self.decode_head.loss(head_outputs, labels) + aux_loss
        output = SpectralMoESemanticSegmenterOutput(
            loss=loss,
            logits=logits,
            class_queries_logits=head_outputs.class_queries_logits,
            masks_queries_logits=head_outputs.masks_queries_logits,
            aux_loss=aux_loss,
            visual_router_probs=tuple(visual_gates) if visual_gates else None,
            depth_router_probs=tuple(depth_gates) if depth_gates else None,
        )
        return output if return_dict else output.to_tuple()

    def _band_setup(self, wavelengths, band_names) -> dict:
        """The band count, encoder wavelengths and depth bands of this call: the config's, or those of the per-call
        band set (wavelength-conditioned encoders only)."""
        config = self.config
        if wavelengths is None and band_names is None:
            return {"num_channels": config.num_channels, "wavelengths": None, "depth_rgb_bands": config.depth_rgb_bands}
        if wavelengths is None:
            raise ValueError("Per-call `band_names` need their `wavelengths` (micrometres, one per band).")
        wavelengths = [float(value) for value in wavelengths]
        if not self.visual_encoder.wavelength_conditioned and wavelengths != list(config.wavelengths or []):
            raise ValueError(
                f"This model's {config.backbone_config.model_type} encoder has a patch kernel fixed to its "
                f"{config.num_channels} trained bands; per-call wavelengths need a wavelength-conditioned encoder "
                "(DOFA)."
            )
        if band_names is not None and len(band_names) != len(wavelengths):
            raise ValueError(f"Got {len(band_names)} band names for {len(wavelengths)} wavelengths.")
        depth_rgb_bands = rgb_band_indices(band_names, wavelengths)
        if depth_rgb_bands is None and self.depth_encoder is not None:
            raise ValueError(
                f"No R, G, B bands for the depth encoder among wavelengths {wavelengths}: name them R, G, B in "
                "`band_names` or include bands near 665, 560 and 490 nm."
            )
        return {"num_channels": len(wavelengths), "wavelengths": wavelengths, "depth_rgb_bands": depth_rgb_bands}

    def _check_pixel_values(self, pixel_values: torch.Tensor, num_channels: int) -> None:
        """Clear errors for inputs the frozen encoders would silently misread."""
        if pixel_values.ndim != 4 or pixel_values.shape[1] != num_channels:
            bands = f" ({', '.join(self.config.band_names)})" if self.config.band_names else ""
            bands = bands if num_channels == self.config.num_channels else " (the per-call bands)"
            raise ValueError(
                f"Expected pixel_values of shape (batch, {num_channels}, height, width){bands}, "
                f"found {tuple(pixel_values.shape)}."
            )
        patch = self.visual_encoder.patch_size
        if pixel_values.shape[-2] % patch or pixel_values.shape[-1] % patch:
            raise ValueError(
                f"Height and width must be multiples of the patch size {patch}, found "
                f"{tuple(pixel_values.shape[-2:])}; "
                "the image processor pads them (`do_pad=True`)."
            )
        if not torch.isfinite(pixel_values).all():
            raise ValueError("pixel_values contain NaN or infinite values; mark no-data pixels in the image processor.")

    def encode(self, pixel_values: torch.Tensor, output_router_probs: bool = False, wavelengths=None,
               depth_rgb_bands: list[int] | None = None):
        """Runs the frozen visual layers with the adapter after each layer the encoder declares
        (`adapter_sites`; the adapter's layer index is the position there), on the patch tokens only. `wavelengths`
        and `depth_rgb_bands` default to the config's.

        Returns:
            `(features, aux_loss, visual_gates, depth_gates)`: the four feature maps of `out_indices`, each
            (B, D, H/s, W/s) for strides s = 4, 8, 16, 32; the auxiliary loss averaged over adapted layers; and, with
            `output_router_probs`, every adapted layer's gates (B, N, E) of each modality (empty lists otherwise).
        """
        encoder, config = self.visual_encoder, self.config
        depth_patches = self._depth_patches(pixel_values, depth_rgb_bands or config.depth_rgb_bands)
        grid = (pixel_values.shape[-2] // encoder.patch_size, pixel_values.shape[-1] // encoder.patch_size)
        sites = encoder.adapter_sites
        adapter_layers = {index: position for position, index in enumerate(sites)}
        hidden_states, layer_kwargs = encoder.embed(pixel_values, wavelengths)
        selected, aux_losses, visual_gates, depth_gates = {}, [], [], []
        for index in range(len(encoder.layers)):
            hidden_states = self._run_frozen_layer(index, hidden_states, layer_kwargs)
            if index in sites:
                depth = self._adapter_depth_tokens(depth_patches, sites[index])
                adapted = self.adapter(
                    encoder.patch_tokens(hidden_states), adapter_layers[index], depth, grid_size=grid,
                    output_router_probs=output_router_probs,
                )
                hidden_states = encoder.with_patch_tokens(hidden_states, adapted.hidden_states)
                aux_losses.append(adapted.aux_loss)
                if adapted.router_probs is not None:
                    visual_gates.append(adapted.router_probs[0])
                    depth_gates += [adapted.router_probs[1]] if adapted.router_probs[1] is not None else []
            if index in config.out_indices:
                selected[index] = self._feature_map(encoder.patch_tokens(hidden_states), grid)
        features = [
            F.interpolate(selected[index], scale_factor=scale, mode="bilinear", align_corners=False)
            for index, scale in zip(config.out_indices, FEATURE_SCALES)
        ]
        aux_loss = torch.stack(aux_losses).mean() if aux_losses else pixel_values.new_zeros(())
        return features, aux_loss, visual_gates, depth_gates

    def _depth_patches(self, pixel_values: torch.Tensor, rgb_bands: list[int]) -> list[torch.Tensor] | None:
        """The depth encoder's patch tokens of every layer (its prefix tokens removed) for the bands `rgb_bands`, or
        `None` when the adapter uses no depth."""
        if self.depth_encoder is None or not self.adapter.uses_depth:
            return None
        prefix_length = self.depth_encoder.num_prefix_tokens
        return [tokens[:, prefix_length:] for tokens in self.depth_encoder(pixel_values[:, rgb_bands])]

    def _adapter_depth_tokens(self, depth_patches: list[torch.Tensor] | None, layer: int) -> torch.Tensor | None:
        """Depth layer `layer`'s patch tokens at the visual width (`config.depth_projection`), or `None`."""
        if depth_patches is None:
            return None
        if self.depth_projection is None:
            return depth_patches[layer]
        return self.depth_projection(depth_patches[layer])

    def _run_frozen_layer(self, index: int, hidden_states: torch.Tensor, layer_kwargs: dict) -> torch.Tensor:
        if self.config.frozen_activation_checkpointing and torch.is_grad_enabled():
            # Frozen layers run in eval mode (no dropout), so the RNG state need not be saved and restored.
            return checkpoint(
                self.visual_encoder.run_layer, index, hidden_states, layer_kwargs, use_reentrant=False,
                preserve_rng_state=False,
            )
        return self.visual_encoder.run_layer(index, hidden_states, layer_kwargs)

    @staticmethod
    def _feature_map(patch_tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """(B, N, D) patch tokens -> (B, D, h, w) map, taken raw (no final norm)."""
        return patch_tokens.transpose(1, 2).reshape(patch_tokens.shape[0], -1, *grid)

    def save_pretrained(self, save_directory, save_encoders: bool | None = None, **kwargs):
        """Saves config (naming the `"spectral-image-segmentation"` pipeline), weights and the STAC MLM description
        (`stac_mlm.py`). By default only the trained adapter and head (about 105 MB at ViT-L scale); the frozen
        encoders are reloaded from `config.backbone` / `config.depth_backbone`. `save_encoders=True` writes
        everything, for offline use; encoders that no checkpoint names (random ones) are always written."""
        save_encoders = save_encoders or not self.has_named_encoders()
        self.config.encoder_weights_in_checkpoint = save_encoders
        # The folder names the multispectral pipeline; its file travels with this one (a relative import).
        from .pipeline_spectralmoe import custom_pipelines

        self.config.custom_pipelines = custom_pipelines()
        if not save_encoders and "state_dict" not in kwargs:
            kwargs["state_dict"] = self.trained_state_dict()
        saved = super().save_pretrained(save_directory, **kwargs)
        if kwargs.get("is_main_process", True):
            write_stac_mlm(save_directory, total_parameters=self.num_parameters())
        return saved

    def trained_state_dict(self) -> dict[str, torch.Tensor]:
        """Every tensor outside the frozen encoders, plus the parameters the adapter added to the visual encoder."""
        injected = {f"visual_encoder.model.{name}" for name in self.adapter.encoder_parameter_names()}
        return {
            name: tensor for name, tensor in self.state_dict().items()
            if not name.startswith(FROZEN_PREFIXES) or name in injected
        }

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """Loads a trained model; fills the frozen encoders from their own checkpoints when the folder lacks them.

        Raises:
            ValueError: when the weights file is unreadable (truncated or corrupted) or lacks trained adapter or head
                weights (an incomplete or foreign checkpoint).
        """
        output_loading_info = kwargs.pop("output_loading_info", False)
        folder = Path(pretrained_model_name_or_path)
        if folder.is_dir() and not (folder / "config.json").is_file():
            raise ValueError(f"{folder} has no config.json: it is not a saved SpectralMoE model folder.")
        try:
            model, loading_info = super().from_pretrained(
                pretrained_model_name_or_path, *model_args, output_loading_info=True, **kwargs
            )
        except SafetensorError as error:
            raise ValueError(
                f"The weights of {pretrained_model_name_or_path} cannot be read ({error}): the file is truncated or "
                "corrupted. Download or save the model again."
            ) from error
        missing = [key for key in loading_info["missing_keys"] if not key.startswith(FROZEN_PREFIXES)]
        if missing:
            raise ValueError(
                f"{pretrained_model_name_or_path} lacks {len(missing)} trained weights of SpectralMoE "
                f"(e.g. {missing[:3]}): the checkpoint is incomplete or not a SpectralMoE checkpoint."
            )
        if not getattr(model.config, "encoder_weights_in_checkpoint", False):
            model.load_pretrained_encoders()
        return (model, loading_info) if output_loading_info else model


def _check_local_checkpoint(name: str, value: str) -> None:
    """A local encoder folder that is gone (a model trained from local folders, then moved) would otherwise surface
    as a Hub repo-id error about the path."""
    # `owner/repo/path/file.pth` names a file of a Hub repo (DOFA's, EVA's releases); other deeper paths are local.
    hub_file = "." in value.rsplit("/", 1)[-1]
    looks_local = os.path.isabs(value) or value.startswith((".", "~")) or (value.count("/") > 1 and not hub_file)
    if looks_local and not os.path.exists(os.path.expanduser(value)):
        raise FileNotFoundError(
            f"`config.{name}` names the local encoder folder {value}, which does not exist (moved or on another "
            f"machine?). Pass its new place or a Hub id: `from_pretrained(folder, {name}=...)`; or save the model "
            "with its encoders (`save_pretrained(folder, save_encoders=True)`, `save_encoders: true` in training)."
        )


AutoConfig.register(SpectralMoEConfig.model_type, SpectralMoEConfig, exist_ok=True)
AutoModelForSemanticSegmentation.register(SpectralMoEConfig, SpectralMoEForSemanticSegmentation, exist_ok=True)
SpectralMoEConfig.register_for_auto_class()
SpectralMoEForSemanticSegmentation.register_for_auto_class("AutoModelForSemanticSegmentation")


__all__ = ["SpectralMoEForSemanticSegmentation", "SpectralMoEPreTrainedModel", "SpectralMoESemanticSegmenterOutput"]
