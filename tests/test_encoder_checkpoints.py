"""The package knows the published architectures of the Table 1 encoders without a download, and reads the image
tower's config from a saved two-tower (CLIP, SAM) folder."""

import pytest
import torch
from transformers import AutoModel, CLIPConfig, CLIPModel, CLIPVisionConfig, SamConfig, SamModel, SamVisionConfig

from modeling_spectralmoe.encoder_checkpoints import known_encoder_config

# Published sizes of the frozen encoders (Table 1 of the paper; SAM's "632M" is its image encoder).
PUBLISHED_PARAMETERS = {
    "facebook/dinov2-large": 304e6,
    "openai/clip-vit-large-patch14": 303e6,  # the vision tower only
    # The image encoder with its neck, as segment-anything's `image_encoder` holds it: 637.0 M here, of which the neck
    # is 0.9 M and the 64 x 64 position table 5.2 M (without that table: 631.8 M, the published figure).
    "facebook/sam-vit-huge": 632e6,
}


@pytest.mark.parametrize("hub_id", PUBLISHED_PARAMETERS)
def test_table_encoders_have_their_published_size(hub_id):
    config = known_encoder_config(hub_id, role="visual")
    with torch.device("meta"):
        encoder = AutoModel.from_config(config)
    count = sum(parameter.numel() for parameter in encoder.parameters())
    print(f"{hub_id}: {type(encoder).__name__} {count:,} parameters")
    assert abs(count - PUBLISHED_PARAMETERS[hub_id]) / PUBLISHED_PARAMETERS[hub_id] < 0.01


def test_sam_huge_runs_windowed_attention_except_at_its_four_global_blocks():
    config = known_encoder_config("facebook/sam-vit-huge", role="visual")
    with torch.device("meta"):
        encoder = AutoModel.from_config(config)
    windows = [layer.window_size for layer in encoder.vision_encoder.layers]
    assert [index for index, window in enumerate(windows) if window == 0] == [7, 15, 23, 31]
    assert set(windows) == {0, 14}


def _tiny_clip() -> CLIPModel:
    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
              "image_size": 28, "patch_size": 14}
    text = {"hidden_size": 24, "intermediate_size": 48, "num_hidden_layers": 1, "num_attention_heads": 2,
            "vocab_size": 99, "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 1}
    return CLIPModel(CLIPConfig(vision_config=vision, text_config=text, projection_dim=16))


def _tiny_sam() -> SamModel:
    vision = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "mlp_dim": 64, "image_size": 64,
              "patch_size": 16, "window_size": 2, "global_attn_indexes": [1], "output_channels": 16}
    return SamModel(SamConfig(vision_config=vision))


@pytest.mark.parametrize("build, config_class", [(_tiny_clip, CLIPVisionConfig), (_tiny_sam, SamVisionConfig)])
def test_a_saved_two_tower_folder_gives_its_vision_config(build, config_class, tmp_path):
    build().save_pretrained(tmp_path)
    config = known_encoder_config(str(tmp_path), role="visual")
    assert type(config) is config_class
    assert (config.hidden_size, config.num_hidden_layers) == (32, 2)
