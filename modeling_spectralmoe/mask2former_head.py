"""Mask2Former decode head of SpectralMoE, built from transformers' Mask2Former pixel decoder, masked-attention
decoder, Hungarian matcher and loss, with the query position embedding supplied by the caller (the adapter).

With weights converted by `conversion/mmdet_mask2former.py`, it reproduces the authors' mmdet/mmseg head
numerically (within 1e-6 on random weights) without any switch: the two implementations share the sine encodings, level
embeddings, post-norm layer order, the 0.5 attention-mask threshold taken after resizing, the "fully masked query
attends everywhere" rule and mmseg's upsample-then-sigmoid semantic scores.
"""

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from transformers import Mask2FormerConfig
from transformers import initialization as init
from transformers.models.mask2former.modeling_mask2former import (
    Mask2FormerLoss,
    Mask2FormerPixelDecoder,
    Mask2FormerPixelDecoderEncoderMultiscaleDeformableAttention,
    Mask2FormerTransformerModule,
)
from transformers.utils import ModelOutput

from .configuration_spectralmoe import SpectralMoEConfig


FEATURE_STRIDES = (4, 8, 16, 32)
IGNORE_INDEX = 255


@dataclass
class Mask2FormerHeadOutput(ModelOutput):
    r"""
    Output of [`SpectralMoEMask2FormerHead`]. `B` is the batch size, `Q` the number of queries, `K` the number of
    classes and `H x W` the size of the highest-resolution input map (stride 4), i.e. a quarter of the image size.

    Args:
        class_queries_logits (`torch.FloatTensor` of shape `(B, Q, K + 1)`):
            Class logits of every query after the last decoder layer; the last class is "no object".
        masks_queries_logits (`torch.FloatTensor` of shape `(B, Q, H, W)`):
            Mask logits of every query after the last decoder layer.
        auxiliary_logits (`list[dict[str, torch.FloatTensor]]`):
            Deep supervision: the prediction made from the initial queries and after every decoder layer but the
            last, in order, each a dict with `class_queries_logits` `(B, Q, K + 1)` and `masks_queries_logits`
            `(B, Q, H, W)`.
    """

    class_queries_logits: torch.FloatTensor | None = None
    masks_queries_logits: torch.FloatTensor | None = None
    auxiliary_logits: list[dict[str, torch.FloatTensor]] | None = None


def _mask2former_config(config: SpectralMoEConfig) -> Mask2FormerConfig:
    """The transformers Mask2Former config of the head's sizes and loss settings."""
    return Mask2FormerConfig(
        feature_size=config.decoder_hidden_dim,
        mask_feature_size=config.decoder_hidden_dim,
        hidden_dim=config.decoder_hidden_dim,
        num_attention_heads=config.decoder_num_heads,
        encoder_layers=config.pixel_decoder_layers,
        encoder_feedforward_dim=config.pixel_decoder_ffn_dim,
        decoder_layers=config.decoder_layers + 1,  # transformers builds `decoder_layers - 1` layers
        dim_feedforward=config.decoder_ffn_dim,
        num_queries=config.num_queries,
        dropout=0.0,
        pre_norm=False,
        feature_strides=FEATURE_STRIDES,
        common_stride=FEATURE_STRIDES[0],
        id2label=config.id2label,
        no_object_weight=config.no_object_weight,
        class_weight=config.class_weight,
        mask_weight=config.mask_weight,
        dice_weight=config.dice_weight,
        train_num_points=config.train_num_points,
        oversample_ratio=config.oversample_ratio,
        importance_sample_ratio=config.importance_sample_ratio,
    )


class _ExternalQueryTransformerModule(Mask2FormerTransformerModule):
    """transformers' Mask2Former transformer module whose query position embedding is an input (SpectralMoE takes
    it from the adapter's expert tokens) instead of its own learned `queries_embedder`. Query features stay learned,
    or, with `replace_query_feat` (Rein-family heads, as SET's and FADA's official configs use), are a linear map of
    the query positions."""

    def __init__(self, in_features: int, config: Mask2FormerConfig, replace_query_feat: bool = False):
        super().__init__(in_features, config)
        del self.queries_embedder
        if replace_query_feat:
            del self.queries_features
            self.query_features_projection = nn.Linear(in_features, in_features)

    def query_features(self, query_position_embeddings: Tensor) -> Tensor:
        """(Q, C) query features: learned, or projected from the positions."""
        if hasattr(self, "query_features_projection"):
            return self.query_features_projection(query_position_embeddings)
        return self.queries_features.weight

    def forward(self, multi_scale_features: list[Tensor], mask_features: Tensor, query_position_embeddings: Tensor):
        keys, key_positions, sizes = [], [], []
        for level, features in enumerate(multi_scale_features):
            sizes.append(features.shape[-2:])
            position = self.position_embedder(features.shape, features.device, features.dtype)
            key_positions.append(position.flatten(2).permute(2, 0, 1))  # (h*w, B, C)
            level_features = self.input_projections[level](features).flatten(2)
            keys.append((level_features + self.level_embed.weight[level][None, :, None]).permute(2, 0, 1))
        batch_size = mask_features.shape[0]
        return self.decoder(
            inputs_embeds=self.query_features(query_position_embeddings).unsqueeze(1).repeat(1, batch_size, 1),
            multi_stage_positional_embeddings=key_positions,
            pixel_embeddings=mask_features,
            encoder_hidden_states=keys,
            query_position_embeddings=query_position_embeddings.unsqueeze(1).repeat(1, batch_size, 1),
            feature_size_list=sizes,
            return_dict=True,
        )


class _ConfigWeightedLoss(Mask2FormerLoss):
    """transformers' Mask2Former loss with the no-object class weight built at call time from the config rather
    than held in a buffer, so it never enters, or goes missing from, a state dict."""

    def __init__(self, config: Mask2FormerConfig):
        weights = {
            "loss_cross_entropy": config.class_weight,
            "loss_mask": config.mask_weight,
            "loss_dice": config.dice_weight,
        }
        super().__init__(config, weight_dict=weights)
        del self.empty_weight

    def loss_labels(self, class_queries_logits, class_labels, indices):
        self.empty_weight = class_queries_logits.new_ones(self.num_labels + 1)
        self.empty_weight[-1] = self.eos_coef
        return super().loss_labels(class_queries_logits, class_labels, indices)


class SpectralMoEMask2FormerHead(nn.Module):
    """
    Mask2Former head (pixel decoder with multi-scale deformable attention + masked-attention transformer decoder)
    over four feature maps at strides 4, 8, 16 and 32, as in the paper (20.6 M parameters at ViT-L width). The
    query position embedding is an input; the query features are learned.

    Args:
        config ([`SpectralMoEConfig`]): decoder sizes (`decoder_*`, `pixel_decoder_*`, `num_queries`), loss weights and
            `num_labels`.
        in_channels (`list[int]`): channels of the four input maps, high to low resolution.
    """

    def __init__(self, config: SpectralMoEConfig, in_channels: list[int]):
        super().__init__()
        if len(in_channels) != len(FEATURE_STRIDES):
            raise ValueError(
                f"The head takes {len(FEATURE_STRIDES)} maps at strides {FEATURE_STRIDES}, got {len(in_channels)}."
            )
        m2f_config = _mask2former_config(config)
        self.num_labels, self.num_queries = config.num_labels, config.num_queries
        self.hidden_dim = config.decoder_hidden_dim
        self.pixel_decoder = Mask2FormerPixelDecoder(m2f_config, feature_channels=list(in_channels))
        for layer in self.pixel_decoder.encoder.layers:  # transformers fixes 4 sampling points; ours are configurable
            layer.self_attn = Mask2FormerPixelDecoderEncoderMultiscaleDeformableAttention(
                config.decoder_hidden_dim,
                config.decoder_num_heads,
                n_levels=self.pixel_decoder.num_feature_levels,
                n_points=config.pixel_decoder_num_points,
            )
        self.transformer_module = _ExternalQueryTransformerModule(
            config.decoder_hidden_dim, m2f_config, config.replace_query_feat
        )
        self.class_predictor = nn.Linear(config.decoder_hidden_dim, config.num_labels + 1)
        self.criterion = _ConfigWeightedLoss(m2f_config)
        self.reset_parameters()

    def forward(self, features: list[Tensor], query_position_embeddings: Tensor) -> Mask2FormerHeadOutput:
        """
        Args:
            features (`list[torch.Tensor]`): four maps `(B, in_channels[i], H_i, W_i)` at strides 4, 8, 16, 32.
            query_position_embeddings (`torch.Tensor` of shape `(num_queries, decoder_hidden_dim)`): added to the
                queries in every attention of the decoder; gradients flow back to its producer.
        """
        expected = (self.num_queries, self.hidden_dim)
        if query_position_embeddings.shape != expected:
            raise ValueError(
                f"`query_position_embeddings` must have shape {tuple(expected)} (num_queries, decoder_hidden_dim), "
                f"got {tuple(query_position_embeddings.shape)}."
            )
        pixel_decoder_output = self.pixel_decoder(features)
        decoder_output = self.transformer_module(
            pixel_decoder_output.multi_scale_features, pixel_decoder_output.mask_features, query_position_embeddings
        )
        # (Q, B, C) per stage: the initial queries, then after each decoder layer, all through the final layer norm
        hidden_states = decoder_output.intermediate_hidden_states
        class_logits = [self.class_predictor(hidden.transpose(0, 1)) for hidden in hidden_states]
        mask_logits = decoder_output.masks_queries_logits
        return Mask2FormerHeadOutput(
            class_queries_logits=class_logits[-1],
            masks_queries_logits=mask_logits[-1],
            auxiliary_logits=[
                {"class_queries_logits": classes, "masks_queries_logits": masks}
                for classes, masks in zip(class_logits[:-1], mask_logits[:-1])
            ],
        )

    @staticmethod
    def semantic_logits(
        class_queries_logits: Tensor, masks_queries_logits: Tensor, image_size: tuple[int, int]
    ) -> Tensor:
        """Per-class scores `(B, K, *image_size)` from class logits `(B, Q, K + 1)` and mask logits `(B, Q, h, w)`:
        the mask logits are upsampled (bilinear) to `image_size` *before* the sigmoid, as mmseg does, then weighted by
        the class probabilities without the no-object class."""
        masks = nn.functional.interpolate(
            masks_queries_logits, size=tuple(image_size), mode="bilinear", align_corners=False
        )
        return torch.einsum("bqc,bqhw->bchw", class_queries_logits.softmax(-1)[..., :-1], masks.sigmoid())

    def loss(self, outputs: Mask2FormerHeadOutput, labels: Tensor) -> Tensor:
        """Weighted Mask2Former loss (class CE, mask BCE, dice) summed over the final and every auxiliary prediction.

        Args:
            outputs ([`Mask2FormerHeadOutput`]): the head's output.
            labels (`torch.LongTensor` of shape `(B, H, W)`): semantic labels, 255 = ignore.
        """
        mask_labels, class_labels = semantic_to_instance_targets(
            labels, self.num_labels, outputs.masks_queries_logits.dtype
        )
        losses = self.criterion(
            outputs.masks_queries_logits,
            outputs.class_queries_logits,
            mask_labels,
            class_labels,
            auxiliary_predictions=outputs.auxiliary_logits,
        )
        # transformers' loss returns the unweighted terms, named loss_<term> and loss_<term>_<auxiliary index>
        return sum(self.criterion.weight_dict[key.rstrip("_0123456789")] * value for key, value in losses.items())

    def no_weight_decay(self) -> set[str]:
        """Normalisation layers, the learned query features and the level embeddings train without weight decay
        (the authors' recipe)."""
        names = {
            f"{module_name}.{name}" for module_name, module in self.named_modules()
            if isinstance(module, (nn.LayerNorm, nn.GroupNorm)) for name, _ in module.named_parameters()
        }
        embeddings = ("queries_features", "level_embed")
        return names | {name for name, _ in self.named_parameters() if any(e in name.split(".") for e in embeddings)}

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Mask2Former's initialisation (its reference code): PyTorch's defaults, Xavier for the deformable encoder,
        the decoder layers and the pixel decoder's input projections, Caffe2-Xavier for the FPN and mask convolutions,
        the Deformable-DETR scheme for the sampling offsets, N(0, 1) for query features and level embeddings.
        transformers' init functions leave tensors already loaded from a checkpoint untouched."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                _torch_default_init(module)
            elif isinstance(module, (nn.LayerNorm, nn.GroupNorm)):
                init.ones_(module.weight)
                init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                init.normal_(module.weight)
        pixel_decoder = self.pixel_decoder
        init.normal_(pixel_decoder.level_embed)
        for projection in pixel_decoder.input_projections:
            init.xavier_uniform_(projection[0].weight)
            init.zeros_(projection[0].bias)
        fpn_convs = [block[0] for block in pixel_decoder.lateral_convolutions + pixel_decoder.output_convolutions]
        for conv in [*fpn_convs, pixel_decoder.mask_projection]:
            _caffe2_xavier_init(conv)
        for layer in pixel_decoder.encoder.layers:
            _xavier_uniform_matrices(layer)
            _deformable_attention_init(layer.self_attn)
        for projection in self.transformer_module.input_projections:
            if isinstance(projection, nn.Conv2d):
                _caffe2_xavier_init(projection)
        for layer in self.transformer_module.decoder.layers:
            _xavier_uniform_matrices(layer)
            attention_biases = [layer.cross_attn.in_proj_bias, layer.cross_attn.out_proj.bias]
            attention_biases += [getattr(layer.self_attn, f"{name}_proj").bias for name in ("q", "k", "v", "out")]
            for bias in attention_biases:  # zero, as in torch's MultiheadAttention
                init.zeros_(bias)


def _torch_default_init(module: nn.Linear | nn.Conv2d) -> None:
    init.kaiming_uniform_(module.weight, a=math.sqrt(5))
    if module.bias is not None:
        bound = 1.0 / math.sqrt(module.weight[0].numel())  # 1 / sqrt(fan_in)
        init.uniform_(module.bias, -bound, bound)


def _caffe2_xavier_init(conv: nn.Conv2d) -> None:
    init.kaiming_uniform_(conv.weight, a=1)
    if conv.bias is not None:
        init.zeros_(conv.bias)


def _xavier_uniform_matrices(module: nn.Module) -> None:
    for param in module.parameters():
        if param.dim() > 1:
            init.xavier_uniform_(param)


def _deformable_attention_init(attention: Mask2FormerPixelDecoderEncoderMultiscaleDeformableAttention) -> None:
    """Deformable DETR: zero offset weights with biases pointing each head in its own direction, at distances
    1..n_points; uniform attention over the sampling points."""
    init.zeros_(attention.sampling_offsets.weight)
    angles = torch.arange(attention.n_heads, dtype=torch.float32) * (2.0 * math.pi / attention.n_heads)
    directions = torch.stack([angles.cos(), angles.sin()], -1)
    directions = directions / directions.abs().max(-1, keepdim=True).values
    distances = torch.arange(1, attention.n_points + 1, dtype=torch.float32)
    grid = directions[:, None, None, :] * distances[None, None, :, None]  # (heads, 1, points, 2)
    grid = grid.expand(-1, attention.n_levels, -1, -1)
    init.copy_(attention.sampling_offsets.bias, grid.reshape(-1).to(attention.sampling_offsets.bias))
    init.zeros_(attention.attention_weights.weight)
    init.zeros_(attention.attention_weights.bias)
    for projection in (attention.value_proj, attention.output_proj):
        init.xavier_uniform_(projection.weight)
        init.zeros_(projection.bias)


def semantic_to_instance_targets(
    labels: Tensor, num_labels: int, dtype: torch.dtype = torch.float32
) -> tuple[list[Tensor], list[Tensor]]:
    """Mask2Former targets from a semantic map `(B, H, W)` (255 = ignore), as mmseg builds them: per image, one binary
    mask per class present, ignore excluded. Returns masks `(n_i, H, W)` of `dtype` and class ids `(n_i,)`; `n_i = 0`
    for an image with only ignore pixels."""
    mask_labels, class_labels = [], []
    for label in labels:
        classes = label.unique()
        classes = classes[classes != IGNORE_INDEX]
        if len(classes) and not 0 <= classes.min() <= classes.max() < num_labels:
            raise ValueError(
                f"Labels must be in [0, {num_labels - 1}] or {IGNORE_INDEX} (ignore), found {classes.tolist()}."
            )
        mask_labels.append((label[None] == classes[:, None, None]).to(dtype))
        class_labels.append(classes.long())
    return mask_labels, class_labels


__all__ = ["SpectralMoEMask2FormerHead", "Mask2FormerHeadOutput"]
