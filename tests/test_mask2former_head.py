"""SpectralMoEMask2FormerHead (transformers' Mask2Former pieces) against the authors' mmdet head, and its loss."""

import pytest
import torch

from modeling_spectralmoe.configuration_spectralmoe import SpectralMoEConfig
from modeling_spectralmoe.conversion.mmdet_mask2former import convert_mmdet_mask2former_head
from modeling_spectralmoe.mask2former_head import SpectralMoEMask2FormerHead, semantic_to_instance_targets

from .conftest import golden_tensors


# The sizes of golden/mask2former_head_reference (its metadata): 64x64 image, maps of 32 channels at strides 4-32.
TINY = dict(
    num_queries=10,
    num_expert_tokens=10,
    id2label={i: str(i) for i in range(5)},
    decoder_hidden_dim=32,
    decoder_num_heads=8,
    pixel_decoder_layers=2,
    pixel_decoder_ffn_dim=64,
    decoder_layers=3,
    decoder_ffn_dim=64,
)


def head_config(**overrides) -> SpectralMoEConfig:
    return SpectralMoEConfig(backbone=None, depth_backbone=None, fusion="none", **{**TINY, **overrides})


def tiny_inputs(batch_size=2, image_size=64, seed=0):
    generator = torch.Generator().manual_seed(seed)
    sizes = [image_size // stride for stride in (4, 8, 16, 32)]
    features = [torch.randn(batch_size, 32, size, size, generator=generator) for size in sizes]
    return features, torch.randn(10, 32, generator=generator, requires_grad=True)


def golden_state_dict(golden):
    """The golden head's weights laid out as in the authors' released checkpoint (`decode_head.*`)."""
    return {f"decode_head.{k[len('param.'):]}": v for k, v in golden.items() if k.startswith("param.")}


def test_reproduces_authors_mmdet_head():
    golden = golden_tensors("mask2former_head_reference")
    head = SpectralMoEMask2FormerHead(head_config(), in_channels=[32] * 4).eval()
    state_dict, _ = convert_mmdet_mask2former_head(golden_state_dict(golden))
    head.load_state_dict(state_dict, strict=True)
    with torch.no_grad():
        outputs = head([golden[f"input.feature{i}"] for i in range(4)], golden["input.query_embed"])
        semantic = head.semantic_logits(outputs.class_queries_logits, outputs.masks_queries_logits, (64, 64))
    stages = [*outputs.auxiliary_logits, outputs]  # initial prediction, then one per decoder layer
    assert len(stages) == 4
    for i, stage in enumerate(stages):
        torch.testing.assert_close(stage["class_queries_logits"], golden[f"output.class_logits{i}"], atol=1e-4, rtol=0)
        torch.testing.assert_close(stage["masks_queries_logits"], golden[f"output.mask_logits{i}"], atol=1e-4, rtol=0)
    torch.testing.assert_close(semantic, golden["output.semantic_logits"], atol=1e-4, rtol=0)


def test_parameter_count_matches_paper():
    labels = {i: str(i) for i in range(24)}
    config = SpectralMoEConfig(backbone=None, depth_backbone=None, fusion="none", id2label=labels)  # decoder defaults
    with torch.device("meta"):
        head = SpectralMoEMask2FormerHead(config, in_channels=[1024] * 4)
    assert 20.5e6 <= sum(p.numel() for p in head.parameters()) <= 20.7e6  # paper: 20.6 M


@pytest.mark.parametrize("num_points", [4, 2])
def test_output_shapes(num_points):
    head = SpectralMoEMask2FormerHead(head_config(pixel_decoder_num_points=num_points), in_channels=[32] * 4)
    features, queries = tiny_inputs(image_size=96)
    outputs = head(features, queries)
    assert outputs.class_queries_logits.shape == (2, 10, 6)
    assert outputs.masks_queries_logits.shape == (2, 10, 24, 24)
    assert len(outputs.auxiliary_logits) == 3  # initial prediction + all decoder layers but the last
    for stage in outputs.auxiliary_logits:
        assert stage["class_queries_logits"].shape == (2, 10, 6)
        assert stage["masks_queries_logits"].shape == (2, 10, 24, 24)


def test_semantic_logits_upsample_masks_before_sigmoid():
    generator = torch.Generator().manual_seed(0)
    classes = torch.randn(2, 10, 6, generator=generator)
    masks = 5 * torch.randn(2, 10, 4, 4, generator=generator)
    semantic = SpectralMoEMask2FormerHead.semantic_logits(classes, masks, (16, 12))
    assert semantic.shape == (2, 5, 16, 12)
    probabilities = classes.softmax(-1)[..., :-1]
    resize = lambda x: torch.nn.functional.interpolate(x, size=(16, 12), mode="bilinear", align_corners=False)
    torch.testing.assert_close(semantic, torch.einsum("bqc,bqhw->bchw", probabilities, resize(masks).sigmoid()))
    sigmoid_first = torch.einsum("bqc,bqhw->bchw", probabilities, resize(masks.sigmoid()))
    assert not torch.allclose(semantic, sigmoid_first, atol=1e-3)


def test_loss_backward_reaches_query_positions_and_every_parameter():
    head = SpectralMoEMask2FormerHead(head_config(), in_channels=[32] * 4)
    features, queries = tiny_inputs()
    labels = torch.randint(0, 5, (2, 64, 64), generator=torch.Generator().manual_seed(1))
    labels[0, :20] = 255
    loss = head.loss(head(features, queries), labels)
    assert torch.isfinite(loss) and loss > 0
    loss.backward()
    assert queries.grad is not None and queries.grad.abs().sum() > 0
    assert [name for name, p in head.named_parameters() if p.grad is None] == []


def test_loss_is_the_weighted_sum_over_all_stages():
    head = SpectralMoEMask2FormerHead(head_config(), in_channels=[32] * 4)
    features, queries = tiny_inputs()
    outputs = head(features, queries)
    labels = torch.randint(0, 5, (2, 64, 64), generator=torch.Generator().manual_seed(1))
    mask_labels, class_labels = semantic_to_instance_targets(labels, 5)
    torch.manual_seed(0)  # the point sampling is random
    terms = head.criterion(
        outputs.masks_queries_logits, outputs.class_queries_logits, mask_labels, class_labels, outputs.auxiliary_logits
    )
    assert len(terms) == 3 * 4  # three terms for the final prediction and each of the three auxiliary ones
    weight = {"loss_cross_entropy": 2.0, "loss_mask": 5.0, "loss_dice": 5.0}  # class 2, mask BCE 5, dice 5
    expected = sum(value * weight[key.rstrip("_0123456789")] for key, value in terms.items())
    torch.manual_seed(0)
    torch.testing.assert_close(head.loss(outputs, labels), expected)
    torch.testing.assert_close(head.criterion.empty_weight, torch.tensor([1.0] * 5 + [0.1]))  # no-object weight 0.1


def test_loss_settings_follow_config():
    criterion = SpectralMoEMask2FormerHead(head_config(), in_channels=[32] * 4).criterion
    matcher = criterion.matcher
    assert (matcher.cost_class, matcher.cost_mask, matcher.cost_dice, matcher.num_points) == (2.0, 5.0, 5.0, 12544)
    assert (criterion.num_points, criterion.oversample_ratio, criterion.importance_sample_ratio) == (12544, 3.0, 0.75)
    assert criterion.weight_dict == {"loss_cross_entropy": 2.0, "loss_mask": 5.0, "loss_dice": 5.0}


def test_ignore_is_not_a_class():
    labels = torch.tensor([[[0, 3, 255], [3, 255, 255]], [[255, 255, 255], [255, 255, 255]]])
    masks, classes = semantic_to_instance_targets(labels, num_labels=5)
    assert classes[0].tolist() == [0, 3]
    assert torch.equal(masks[0], torch.tensor([[[1.0, 0, 0], [0, 0, 0]], [[0, 1, 0], [1, 0, 0]]]))
    assert classes[1].numel() == 0 and masks[1].shape == (0, 2, 3)
    with pytest.raises(ValueError, match=r"found \[0, 7\]"):
        semantic_to_instance_targets(torch.tensor([[[0, 7]]]), num_labels=5)


@pytest.mark.parametrize("ignored_images", [[1], [0, 1]])
def test_loss_with_images_of_only_ignore(ignored_images):
    head = SpectralMoEMask2FormerHead(head_config(), in_channels=[32] * 4)
    features, queries = tiny_inputs()
    labels = torch.randint(0, 5, (2, 64, 64), generator=torch.Generator().manual_seed(1))
    labels[ignored_images] = 255
    loss = head.loss(head(features, queries), labels)
    assert torch.isfinite(loss) and loss > 0  # every query still learns "no object"
    loss.backward()
    assert queries.grad is not None


def test_converter_reports_every_key():
    golden = golden_tensors("mask2former_head_reference")
    source = golden_state_dict(golden)
    source["decode_head.query_embed.weight"] = torch.zeros(10, 32)  # a plain mmseg head also has its own
    source["backbone.depthmoe.scale"] = torch.ones(())  # outside the prefix: not the converter's business
    state_dict, report = convert_mmdet_mask2former_head(source)
    assert set(report) == {key for key in source if key.startswith("decode_head.")}
    assert report["decode_head.query_embed.weight"].startswith("dropped: ")
    assert report["decode_head.cls_embed.weight"] == "mapped -> class_predictor.weight"
    packed = golden["param.transformer_decoder.layers.0.self_attn.attn.in_proj_weight"]
    torch.testing.assert_close(state_dict["transformer_module.decoder.layers.0.self_attn.v_proj.weight"], packed[64:])


@pytest.mark.parametrize(
    "edit, named",
    [
        ("drop", "decode_head.transformer_decoder.layers.1.norms.2.bias"),
        ("drop", "decode_head.transformer_decoder.layers.2.self_attn.attn.in_proj_weight"),
        ("drop", "decode_head.pixel_decoder.lateral_convs.0.conv.weight"),
        ("add", "decode_head.querys2feat.weight"),
        ("add", "decode_head.pixel_decoder.encoder.layers.0.self_attn.sampling_offsets.scale"),
    ],
)
def test_converter_rejects_missing_and_unknown_keys(edit, named):
    source = golden_state_dict(golden_tensors("mask2former_head_reference"))
    if edit == "drop":
        del source[named]
    else:
        source[named] = torch.zeros(1)
    with pytest.raises(ValueError, match=named.replace(".", r"\.")):
        convert_mmdet_mask2former_head(source)


def test_replace_query_feat_projects_query_features_from_positions():
    """The Rein-family head of SET's and FADA's official configs: query features = Linear(query positions)."""
    torch.manual_seed(0)
    head = SpectralMoEMask2FormerHead(head_config(replace_query_feat=True), in_channels=[32] * 4).eval()
    names = {name for name, _ in head.named_parameters()}
    assert "transformer_module.query_features_projection.weight" in names
    assert not any("queries_features" in name for name in names)
    features, queries = tiny_inputs()
    outputs = head(features, queries)
    outputs.class_queries_logits.sum().backward()
    assert queries.grad.abs().sum() > 0 and head.transformer_module.query_features_projection.weight.grad.any()
    transform = head.transformer_module.query_features_projection
    with torch.no_grad():  # the projection is what feeds the decoder: zeroing it changes the predictions
        transform.weight.zero_()
        transform.bias.zero_()
        changed = head(features, queries).class_queries_logits
    assert (changed - outputs.class_queries_logits).abs().max() > 1e-4
