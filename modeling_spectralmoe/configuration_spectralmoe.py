"""Configuration of SpectralMoE: frozen visual + depth encoders, the dual-gated MoE adapter and a Mask2Former head."""

from typing import Any

from transformers import AutoConfig, PreTrainedConfig
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

from .configuration_dofa import DOFAConfig
from .configuration_eva02 import EVA02Config
from .encoder_checkpoints import image_encoder_config, known_encoder_config


ADAPTER_TYPES = ("spectralmoe", "rein", "depthforge", "frozen", "set", "fada", "lora", "dora", "adaptformer", "vpt")
GATINGS = ("laplace", "softmax", "gaussian")
PERCEPTUAL_MAPS = ("dot_product", "official_sum_product")
FUSIONS = ("cross_attention", "official_diagonal", "add", "none")
GRID_ALIGNMENTS = ("resample_patch_embed", "resize_input")
POSITION_INTERPOLATIONS = ("dinov2", "transformers")
BACKBONE_POSITION_INTERPOLATIONS = ("library", "dgss")
PATCH_EMBED_EXPANSIONS = ("cyclic", "mean")
DEFAULT_NUM_QUERIES = 100  # Mask2Former's query count, and hence the expert tokens per expert


def default_out_indices(num_layers: int) -> list[int]:
    """Ends of the first third, half, two thirds and the last layer: 7, 11, 15, 23 for 24 layers and 3, 5, 7, 11 for
    12 (the authors' configs). Shallow test encoders may repeat a layer."""
    ends = (num_layers // 3 - 1, num_layers // 2 - 1, 2 * num_layers // 3 - 1, num_layers - 1)
    return [max(0, index) for index in ends]


# SAM's image encoder (model type of transformers' `SamVisionConfig`): windowed attention with a few global blocks.
SAM_VISION_MODEL_TYPE = "sam_vision_model"


def adapted_layers(backbone_config: PreTrainedConfig) -> list[int]:
    """The visual layers after which a token adapter runs: SAM's global-attention blocks only (Rein's SAM wiring; its
    windowed blocks attend within 14 x 14 windows), every layer of the other families."""
    if backbone_config.model_type == SAM_VISION_MODEL_TYPE:
        return sorted(backbone_config.global_attn_indexes)
    return list(range(backbone_config.num_hidden_layers))


def paired_depth_layer(visual_layer: int, num_visual_layers: int, num_depth_layers: int) -> int:
    """The depth layer at the same relative depth as a visual layer: itself for equal depths, and 5, 11, 17, 23 of a
    24-layer depth encoder for SAM-H's global blocks 7, 15, 23, 31."""
    return round((visual_layer + 1) * num_depth_layers / num_visual_layers) - 1


def default_backbone_out_indices(backbone_config: PreTrainedConfig) -> list[int]:
    """SAM's four global blocks (7, 15, 23, 31 for SAM-H), else `default_out_indices`."""
    if backbone_config.model_type == SAM_VISION_MODEL_TYPE and len(backbone_config.global_attn_indexes) == 4:
        return sorted(backbone_config.global_attn_indexes)
    return default_out_indices(backbone_config.num_hidden_layers)


# What the depth model's R, G, B inputs stand for: band names, and the centres (micrometres) of the visible bands.
RGB_NAMES = (("r", "red"), ("g", "green"), ("b", "blue"))
RGB_WAVELENGTHS_UM = (0.665, 0.56, 0.49)
RGB_MAX_OFFSET_UM = 0.05  # beyond this the nearest band is no longer "red", "green" or "blue"


def rgb_band_indices(band_names: list[str] | None = None, wavelengths: list[float] | None = None) -> list[int] | None:
    """Indices of the R, G, B bands: by name (`R`/`Red`, `G`/`Green`, `B`/`Blue`, any case), else the bands whose
    centres lie nearest 665, 560 and 490 nm (each within 50 nm), else `None`."""
    if band_names:
        lowered = [name.strip().lower() for name in band_names]
        found = [next((i for i, name in enumerate(lowered) if name in aliases), None) for aliases in RGB_NAMES]
        if None not in found:
            return found
    if wavelengths:
        bands = range(len(wavelengths))
        nearest = [min(bands, key=lambda i: abs(wavelengths[i] - centre)) for centre in RGB_WAVELENGTHS_UM]
        offsets = [abs(wavelengths[i] - centre) for i, centre in zip(nearest, RGB_WAVELENGTHS_UM)]
        if max(offsets) <= RGB_MAX_OFFSET_UM and len(set(nearest)) == 3:
            return nearest
    return None


# Encoders written in this package, registered with `AutoConfig` here unless their modeling file (which registers
# the config with its model) ran first: their saved configs and folders then resolve by `model_type` without it.
for _encoder_config in (DOFAConfig, EVA02Config):
    if _encoder_config.model_type not in CONFIG_MAPPING:
        AutoConfig.register(_encoder_config.model_type, _encoder_config)


def _as_encoder_config(value: Any) -> PreTrainedConfig | None:
    """Turns a serialized sub-config (dict with `model_type`) back into its config class."""
    if value is None or isinstance(value, PreTrainedConfig):
        return value
    value = dict(value)
    model_type = value.pop("model_type")
    value.pop("transformers_version", None)
    return AutoConfig.for_model(model_type, **value)


class SpectralMoEConfig(PreTrainedConfig):
    r"""
    Configuration of [`SpectralMoEForSemanticSegmentation`] (Chen et al., CVPR 2026). Only the adapter and the
    Mask2Former head are trained; the visual foundation model (DINOv3, DOFA, DINOv2, CLIP, SAM or EVA02) and the
    depth foundation model (the DINOv2 encoder of Prompt Depth Anything) stay frozen. Building a model from this
    config never downloads: the encoders' architectures come from `backbone_config` / `depth_backbone_config`, from a
    local folder named by `backbone` / `depth_backbone`, or from the package's table of known checkpoints.

    Args:
        backbone (`str`, *optional*, defaults to `"facebook/dinov3-vitl16-pretrain-lvd1689m"`):
            Hub id or local path of the frozen visual encoder, loaded by `load_pretrained_encoders()`: a DINOv3, DOFA,
            DINOv2 (`Dinov2Model`), CLIP (a `CLIPModel` or `CLIPVisionModel` checkpoint; its vision tower is used),
            SAM (a `SamModel` or `SamVisionModel` checkpoint; its image encoder is used) or EVA02 (timm's or EVA's
            weights, see `read_eva02_weights`) checkpoint.
        backbone_config (`PreTrainedConfig` or `dict`, *optional*):
            Architecture of the visual encoder: `DINOv3ViTConfig`, `DOFAConfig`, `Dinov2Config`, `CLIPVisionConfig`,
            `SamVisionConfig` or `EVA02Config` (a dict needs its `model_type`; a full `CLIPConfig` / `SamConfig`
            gives its `vision_config`). Resolved from `backbone` when not given. The model is built with this
            config's `patch_size` and `image_size`: released weights of another patch size (DINOv2's, CLIP's and
            EVA02's 14) have their patch kernel resized bicubically and their position table resized to the
            configured grid on loading (see each family's wrapper in `visual_encoder_families.py`). SAM adapters
            run after its global-attention blocks only, and its default `out_indices` are those blocks.
        depth_backbone (`str`, *optional*, defaults to `"depth-anything/prompt-depth-anything-vitl-hf"`):
            Hub id or local path of a Prompt Depth Anything / Depth Anything checkpoint whose DINOv2 encoder supplies
            the depth tokens. `None` when no depth encoder is used (`fusion="none"`, or `adapter_type="rein"`).
        depth_backbone_config (`PreTrainedConfig` or `dict`, *optional*):
            Architecture of the depth encoder (`Dinov2Config`). Resolved from `depth_backbone` when not given.
        depth_projection (`bool`, *optional*, defaults to `False`):
            Map the depth tokens to the visual width with a trained `Linear(depth width, visual width)` before the
            adapter, so a depth encoder narrower than the visual one can feed it (SAM-H's 1280 against PromptDA-L's
            1024). Not in any released code: the paper does not say how its SAM-H depth rows paired the widths.
            Without it, the widths must match.
        num_channels (`int`, *optional*):
            Number of input bands. Defaults to the length of `band_names` or `wavelengths` when given, else 3.
        band_names (`list[str]`, *optional*):
            Name of each input band (e.g. `["NIR", "R", "G", "B"]`); one per band.
        wavelengths (`list[float]`, *optional*):
            Central wavelength of each band in micrometres; required by DOFA, one per band.
        depth_rgb_bands (`list[int]`, *optional*):
            Indices of the bands fed to the depth encoder as R, G, B (after normalisation). Defaults to the bands
            named R, G, B, else those nearest 665, 560 and 490 nm when `wavelengths` are given, else `[0, 1, 2]` for
            3-band input; any other input that feeds a depth encoder must name them.
        patch_embed_expansion (`str`, *optional*, defaults to `"cyclic"`):
            How a DINOv3 RGB patch kernel is widened to `num_channels` bands: `"cyclic"` (band c takes RGB kernel
            c mod 3, authors' code) or `"mean"` (every band takes the RGB mean times 3 / C).
        depth_grid_alignment (`str`, *optional*, defaults to `"resample_patch_embed"`):
            How the depth encoder's patch-14 grid is paired with the visual patch-16 grid:
            `"resample_patch_embed"` resizes its patch kernel to the visual patch size at load time (authors' code);
            `"resize_input"` resizes its RGB input to (H/16*14, W/16*14).
        depth_position_interpolation (`str`, *optional*, defaults to `"dinov2"`):
            How the depth encoder's position table meets another patch grid: `"dinov2"` (DINOv2's and the authors'
            code: bicubic with scale factor (grid + 0.1) / table side, no antialias) or `"transformers"` (bicubic
            resize straight to the grid, as `Dinov2Embeddings` does).
        backbone_position_interpolation (`str`, *optional*, defaults to `"library"`):
            How a DINOv2, CLIP or EVA02 visual encoder's position table meets an input grid other than its own:
            `"library"` (the model's own: transformers' bicubic resize to the grid; EVA02's configured
            `position_interpolation`, timm's antialiased bicubic by default) or `"dgss"` (the DGSS code bases':
            DINOv2's bicubic with scale factor (grid + 0.1) / table side, CLIP's bilinear resize to the grid, EVA's
            plain bicubic).
        clip_class_embedding_twice (`bool`, *optional*, defaults to `False`):
            Add a CLIP encoder's class embedding to its cls token a second time, as the Rein-family CLIP code does
            (DenseCLIP heritage); the model itself adds it once.
        adapter_type (`str`, *optional*, defaults to `"spectralmoe"`):
            The plug-in after every frozen layer: `"spectralmoe"` (the dual-gated MoE), or the paper's comparison
            methods `"rein"` (one low-rank token bank per layer, no depth), `"depthforge"` (Rein whose token scores
            also take the depth tokens'), `"set"` (Rein tokens on the phase and amplitude of an FFT over batch and
            channels, official code), `"fada"` (Rein tokens on a Haar split of the tokens' memory layout, official
            code), `"frozen"` (no adapter: only the head and a learned query position table train), and the
            general-purpose methods acting inside the frozen layers `"lora"` / `"dora"` (peft, `lora_*`),
            `"adaptformer"` (`adaptformer_*`) and `"vpt"` (`vpt_num_prompts`), which use a learned query table too.
            The token methods use `num_expert_tokens`, `expert_rank` and `adapter_scale_init`.
        out_indices (`list[int]`, *optional*):
            0-based visual layers whose adapted patch tokens feed the decoder at strides 4, 8, 16, 32. Defaults to
            7, 11, 15, 23 for 24 layers and 3, 5, 7, 11 for 12.
        num_experts (`int`, *optional*, defaults to 6):
            Experts per layer (E).
        top_k (`int`, *optional*, defaults to 1):
            Experts kept per token (k).
        expert_rank (`int`, *optional*, defaults to 16):
            Rank r of each expert's token factorisation `A @ B`.
        num_expert_tokens (`int`, *optional*):
            Tokens per expert (m); equals `num_queries`, since the tokens also give the queries' positions. Either
            follows the other when only one is set; 100 when neither is.
        gating (`str`, *optional*, defaults to `"laplace"`):
            Router logits: `"laplace"` (-L2 distance to prototypes, paper), `"softmax"` (dot product) or
            `"gaussian"` (-squared L2 distance).
        noisy_gating (`bool`, *optional*, defaults to `True`):
            Add learned Gaussian noise to the router logits in training mode.
        aux_loss_coef (`float`, *optional*, defaults to 1000.0):
            Weight of the load-balancing loss CV²(importance) + CV²(load), summed over modalities (released code).
        perceptual_map (`str`, *optional*, defaults to `"dot_product"`):
            Token-to-expert-token scores: `"dot_product"` (paper) or `"official_sum_product"` (released code).
        fusion (`str`, *optional*, defaults to `"cross_attention"`):
            Depth fusion: `"cross_attention"` (paper), `"official_diagonal"` (released code), `"add"` (ablation
            w/o cross-attention) or `"none"` (ablation w/o depth; no depth encoder is built).
        shared_gate (`bool`, *optional*, defaults to `False`):
            One router per layer for both modalities (ablation w/o dual gating).
        lora_rank (`int`, *optional*, defaults to 8):
            LoRA / DoRA rank r.
        lora_alpha (`float`, *optional*, defaults to 8.0):
            LoRA scaling alpha (the update is scaled by alpha / r).
        lora_dropout (`float`, *optional*, defaults to 0.0):
            Dropout on LoRA's input (inactive: the frozen encoder runs in eval mode).
        lora_target_modules (`list[str]`, *optional*):
            Projections LoRA adapts; defaults to the encoder family's (q and v for DINOv3, the fused qkv for DOFA).
        adaptformer_bottleneck (`int`, *optional*, defaults to 64):
            Width of AdaptFormer's bottleneck.
        adaptformer_scale (`float`, *optional*, defaults to 0.1):
            Fixed scale of AdaptFormer's branch.
        adaptformer_dropout (`float`, *optional*, defaults to 0.1):
            Dropout inside AdaptFormer's branch (training only).
        vpt_num_prompts (`int`, *optional*, defaults to 150):
            VPT-deep prompts per layer.
        adapter_scale_init (`float`, *optional*, defaults to 1e-3):
            Initial value of the shared residual scale `s`.
        frozen_activation_checkpointing (`bool`, *optional*, defaults to `False`):
            Recompute the frozen visual layers in the backward pass instead of storing their activations.
        decoder_hidden_dim (`int`, *optional*, defaults to 256):
            Feature and mask dimension of the Mask2Former head.
        replace_query_feat (`bool`, *optional*, defaults to `False`):
            Make the decoder's query features a linear map of the query positions instead of a learned table (the
            Rein-family head that SET's and FADA's official configs use).
        num_queries (`int`, *optional*):
            Mask queries; follows `num_expert_tokens` (100 when neither is set).
        decoder_num_heads (`int`, *optional*, defaults to 8):
            Attention heads in the pixel decoder and the transformer decoder.
        pixel_decoder_layers (`int`, *optional*, defaults to 6):
            Multi-scale deformable-attention encoder layers of the pixel decoder.
        pixel_decoder_ffn_dim (`int`, *optional*, defaults to 1024):
            Feed-forward width of the pixel decoder layers.
        pixel_decoder_num_points (`int`, *optional*, defaults to 4):
            Sampling points per head and level of the deformable attention.
        decoder_layers (`int`, *optional*, defaults to 9):
            Masked-attention transformer decoder layers.
        decoder_ffn_dim (`int`, *optional*, defaults to 2048):
            Feed-forward width of the transformer decoder layers.
        class_weight (`float`, *optional*, defaults to 2.0):
            Weight of the classification cross-entropy (and its matching cost).
        mask_weight (`float`, *optional*, defaults to 5.0):
            Weight of the mask binary cross-entropy (and its matching cost).
        dice_weight (`float`, *optional*, defaults to 5.0):
            Weight of the dice loss (and its matching cost).
        no_object_weight (`float`, *optional*, defaults to 0.1):
            Cross-entropy weight of the "no object" class.
        train_num_points (`int`, *optional*, defaults to 12544):
            Points sampled per mask for the mask losses.
        oversample_ratio (`float`, *optional*, defaults to 3.0):
            Oversampling ratio of the point sampling.
        importance_sample_ratio (`float`, *optional*, defaults to 0.75):
            Fraction of points sampled by uncertainty.
        encoder_weights_in_checkpoint (`bool`, *optional*, defaults to `False`):
            Written by `save_pretrained`: whether the saved folder also holds the frozen encoders' weights. When it
            does not, `from_pretrained` loads them from `backbone` / `depth_backbone`.
        id2label (`dict[int, str]`, *optional*):
            Class names; their count is the number of classes.
    """

    model_type = "spectralmoe"

    backbone: str | None = "facebook/dinov3-vitl16-pretrain-lvd1689m"
    backbone_config: Any = None
    depth_backbone: str | None = "depth-anything/prompt-depth-anything-vitl-hf"
    depth_backbone_config: Any = None
    num_channels: int | None = None
    band_names: list[str] | None = None
    wavelengths: list[float] | None = None
    depth_rgb_bands: list[int] | tuple[int, ...] | None = None
    patch_embed_expansion: str = "cyclic"
    depth_grid_alignment: str = "resample_patch_embed"
    depth_position_interpolation: str = "dinov2"
    backbone_position_interpolation: str = "library"
    clip_class_embedding_twice: bool = False
    depth_projection: bool = False
    out_indices: list[int] | None = None
    adapter_type: str = "spectralmoe"
    num_experts: int = 6
    top_k: int = 1
    expert_rank: int = 16
    num_expert_tokens: int | None = None
    gating: str = "laplace"
    noisy_gating: bool = True
    aux_loss_coef: float = 1000.0
    perceptual_map: str = "dot_product"
    fusion: str = "cross_attention"
    shared_gate: bool = False
    lora_rank: int = 8
    lora_alpha: float = 8.0
    lora_dropout: float = 0.0
    lora_target_modules: list[str] | None = None
    adaptformer_bottleneck: int = 64
    adaptformer_scale: float = 0.1
    adaptformer_dropout: float = 0.1
    vpt_num_prompts: int = 150
    adapter_scale_init: float = 1e-3
    frozen_activation_checkpointing: bool = False
    decoder_hidden_dim: int = 256
    num_queries: int | None = None
    replace_query_feat: bool = False
    decoder_num_heads: int = 8
    pixel_decoder_layers: int = 6
    pixel_decoder_ffn_dim: int = 1024
    pixel_decoder_num_points: int = 4
    decoder_layers: int = 9
    decoder_ffn_dim: int = 2048
    class_weight: float = 2.0
    mask_weight: float = 5.0
    dice_weight: float = 5.0
    no_object_weight: float = 0.1
    train_num_points: int = 12544
    oversample_ratio: float = 3.0
    importance_sample_ratio: float = 0.75
    encoder_weights_in_checkpoint: bool = False

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.depth_rgb_bands is None:
            self.depth_rgb_bands = rgb_band_indices(self.band_names, self.wavelengths)
        self.depth_rgb_bands = list(self.depth_rgb_bands) if self.depth_rgb_bands is not None else None
        if self.num_expert_tokens is None or self.num_queries is None:
            count = self.num_expert_tokens or self.num_queries or DEFAULT_NUM_QUERIES
            self.num_expert_tokens = self.num_queries = count
        if self.num_channels is None:
            self.num_channels = len(self.band_names or self.wavelengths or "RGB")
        if self.depth_rgb_bands is None and self.num_channels == 3:
            self.depth_rgb_bands = [0, 1, 2]
        if self.id2label is not None and self.label2id is None:
            self.label2id = {name: index for index, name in self.id2label.items()}
        if not self.uses_depth:
            self.depth_backbone = None
        self.backbone_config = _as_encoder_config(self.backbone_config)
        self.depth_backbone_config = _as_encoder_config(self.depth_backbone_config)
        if self.backbone_config is None and self.backbone is not None:
            self.backbone_config = known_encoder_config(self.backbone, role="visual")
        self.backbone_config = image_encoder_config(self.backbone_config)
        if self.depth_backbone_config is None and self.depth_backbone is not None:
            self.depth_backbone_config = known_encoder_config(self.depth_backbone, role="depth")
        if self.out_indices is None and self.backbone_config is not None:
            self.out_indices = default_backbone_out_indices(self.backbone_config)
        self.validate()

    @property
    def uses_depth(self) -> bool:
        """Whether a depth encoder is built and run: SpectralMoE with a fusion, or DepthForge."""
        if self.adapter_type == "spectralmoe":
            return self.fusion != "none"
        return self.adapter_type == "depthforge"

    @property
    def num_adapted_layers(self) -> int:
        """How many visual layers carry a token adapter (see `adapted_layers`): what token methods size by."""
        return len(adapted_layers(self.backbone_config))

    @property
    def uses_dofa(self) -> bool:
        # By model type: under remote code the config and model files may import two copies of `DOFAConfig`.
        return getattr(self.backbone_config, "model_type", None) == DOFAConfig.model_type

    def validate(self) -> None:
        """Checks every choice field and the band metadata; errors say what was expected and what was found."""
        for name, allowed in (
            ("adapter_type", ADAPTER_TYPES),
            ("gating", GATINGS),
            ("perceptual_map", PERCEPTUAL_MAPS),
            ("fusion", FUSIONS),
            ("depth_grid_alignment", GRID_ALIGNMENTS),
            ("depth_position_interpolation", POSITION_INTERPOLATIONS),
            ("backbone_position_interpolation", BACKBONE_POSITION_INTERPOLATIONS),
            ("patch_embed_expansion", PATCH_EMBED_EXPANSIONS),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"`{name}` must be one of {allowed}, found {getattr(self, name)!r}.")
        if not 1 <= self.top_k <= self.num_experts:
            raise ValueError(f"`top_k` must be in [1, num_experts={self.num_experts}], found {self.top_k}.")
        if self.num_expert_tokens != self.num_queries:
            raise ValueError(
                f"`num_expert_tokens` ({self.num_expert_tokens}) must equal `num_queries` ({self.num_queries}): "
                "the expert tokens give the decoder's query position embedding."
            )
        if self.band_names is not None and len(self.band_names) != self.num_channels:
            raise ValueError(
                f"`band_names` has {len(self.band_names)} entries but `num_channels` is {self.num_channels}."
            )
        if self.wavelengths is not None and len(self.wavelengths) != self.num_channels:
            raise ValueError(
                f"`wavelengths` has {len(self.wavelengths)} entries but `num_channels` is {self.num_channels}."
            )
        if self.wavelengths is not None and not all(0.2 <= w <= 20 for w in self.wavelengths):
            raise ValueError(
                f"`wavelengths` are band centres in micrometres (0.2-20), found {self.wavelengths}; values in "
                "nanometres must be divided by 1000."
            )
        if self.uses_dofa and self.wavelengths is None:
            raise ValueError("A DOFA visual encoder needs `wavelengths` (micrometres, one per band); found None.")
        if self.uses_depth:
            if self.depth_rgb_bands is None:
                raise ValueError(
                    f"The depth encoder needs the R, G, B bands of the {self.num_channels} input bands: none is named "
                    "R, G or B and no wavelengths lie near 665, 560, 490 nm. Set `depth_rgb_bands` (3 indices)."
                )
            if len(self.depth_rgb_bands) != 3:
                raise ValueError(f"`depth_rgb_bands` must name 3 bands (R, G, B), found {self.depth_rgb_bands}.")
            out_of_range = [i for i in self.depth_rgb_bands if not 0 <= i < self.num_channels]
            if out_of_range:
                raise ValueError(
                    f"`depth_rgb_bands` indices must be in [0, {self.num_channels - 1}] for {self.num_channels} "
                    f"bands, found {out_of_range}."
                )
        self._validate_encoder_pair()

    def _validate_encoder_pair(self) -> None:
        """Depth tokens enter the visual adapter's experts, so both widths must match unless `depth_projection` maps
        one to the other. A family adapted after every layer pairs its layers 1:1 with the depth layers; SAM pairs
        its global blocks with the depth layers at the same relative depth (`paired_depth_layer`), so its layer count
        may differ."""
        visual, depth = self.backbone_config, self.depth_backbone_config
        if not self.uses_depth or visual is None or depth is None:
            return
        compared = () if self.depth_projection else ("hidden_size",)
        if visual.model_type != SAM_VISION_MODEL_TYPE:
            compared += ("num_hidden_layers",)
        if any(getattr(visual, name) != getattr(depth, name) for name in compared):
            raise ValueError(
                f"The depth encoder must match the visual encoder's {' and '.join(compared)} (the experts are shared "
                f"by both modalities): visual has hidden_size={visual.hidden_size}, {visual.num_hidden_layers} layers; "
                f"depth has hidden_size={depth.hidden_size}, {depth.num_hidden_layers} layers. Pair a ViT-L visual "
                "encoder with PromptDA-L or Depth-Anything-V2-Large. No depth encoder has SAM-H's width (1280): on "
                "SAM-H set `depth_projection=True` (a trained width projection), or use a depth-free adapter (rein, "
                "set, fada, lora, dora, adaptformer, frozen) or `fusion=\"none\"`."
            )


__all__ = ["SpectralMoEConfig"]
