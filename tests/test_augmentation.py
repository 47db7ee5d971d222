"""Training augmentations (crop size, flips that keep labels aligned, photometric jitter on the bands named R, G, B,
cat_max_ratio) and the training collator, whose no-data handling is the image processor's."""

import datasets
import numpy as np
import pytest
import torch

from modeling_spectralmoe import SpectralMoEImageProcessor
from modeling_spectralmoe.data.augmentation import AugmentationConfig, augment, photometric_distortion, random_crop
from modeling_spectralmoe.data.loading import ProcessorCollator, SegmentationSplit
from modeling_spectralmoe.data.schema import IGNORE_INDEX, SpectralMetadata, segmentation_features


def striped_sample(height: int, width: int, channels: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Label = column index mod 5 (255 every 7th column); band 0 encodes the label, so alignment is checkable."""
    columns = torch.arange(width).expand(height, width)
    label = (columns % 5).long()
    label[:, ::7] = IGNORE_INDEX
    image = torch.rand(channels, height, width) * 200
    image[0] = label.float()
    return image, label


@pytest.mark.parametrize("size, scale_range", [((40, 56), None), ((20, 24), None), ((48, 64), (0.5, 2.0))])
def test_augment_gives_the_crop_size(size, scale_range):
    image, label = striped_sample(*size)
    config = AugmentationConfig(crop_size=32, scale_range=scale_range, photometric=False)
    for seed in range(5):
        out_image, out_label = augment(image, label, config, torch.Generator().manual_seed(seed))
        assert out_image.shape == (4, 32, 32) and out_label.shape == (32, 32)
    if size == (20, 24):  # smaller than the crop: padded with "no measurement" (NaN) and ignore
        assert (out_label[20:] == IGNORE_INDEX).all() and out_image[:, 20:].isnan().all()


def test_flip_keeps_labels_aligned_with_pixels():
    image, label = striped_sample(32, 40)
    image[1] = torch.arange(40).float()  # band 1 = column index, to see which way a crop faces
    config = AugmentationConfig(crop_size=32, scale_range=None, flip_prob=1.0, photometric=False, cat_max_ratio=1.0)
    out_image, out_label = augment(image[:, :, :32], label[:, :32], config, torch.Generator().manual_seed(0))
    assert torch.equal(out_label, label[:, :32].flip(-1)) and torch.equal(out_image, image[:, :, :32].flip(-1))
    # Random crops, flipped or not: every pixel keeps its label (band 0 encodes it, ignore included).
    config = AugmentationConfig(crop_size=24, scale_range=None, flip_prob=0.5, photometric=False)
    orientations = set()
    for seed in range(8):
        out_image, out_label = augment(image, label, config, torch.Generator().manual_seed(seed))
        assert out_label.shape == (24, 24) and torch.equal(out_image[0], out_label.float())
        orientations.add(bool(out_image[1, 0, 1] < out_image[1, 0, 0]))
    assert orientations == {False, True}


def test_photometric_distortion_touches_only_the_rgb_bands():
    bands = ["NIR", "R", "G", "B", "SWIR"]
    image = torch.rand(5, 16, 16) * 255
    metadata = SpectralMetadata(name="x", band_names=bands, mean=[0.0] * 5, std=[1.0] * 5, id2label={0: "a"})
    config = AugmentationConfig(rgb_bands=metadata.rgb_band_indices(), brightness_delta=32, value_range=255)
    changed = torch.zeros(5, dtype=torch.bool)
    for seed in range(8):
        out = photometric_distortion(image, config, torch.Generator().manual_seed(seed))
        assert torch.equal(out[[0, 4]], image[[0, 4]])  # NIR and SWIR untouched, bit for bit
        assert out.min() >= 0 and out.max() <= 255
        changed |= (out != image).flatten(1).any(1)
    assert changed.tolist() == [False, True, True, True, False]
    for disabled in (AugmentationConfig(rgb_bands=None), AugmentationConfig(rgb_bands=[1, 2, 3], photometric=False)):
        assert torch.equal(photometric_distortion(image, disabled, torch.Generator().manual_seed(0)), image)


def test_padding_and_nodata_are_zero_after_normalisation_and_ignored():
    """Crops larger than the image are padded, some pixels are no-data (0 in every band), and photometric jitter
    shifts the R, G, B values: after the collator those pixels are exactly 0 (as in evaluation) and ignored."""
    image = np.full((4, 20, 24), 100, dtype=np.uint8)
    image[:, 5, 5] = 0  # no-data
    label = np.ones((20, 24), dtype=np.uint8)
    split = datasets.Dataset.from_dict(
        {"pixel_values": [image], "label": [label], "domain": ["d"], "image_id": ["0"]},
        features=segmentation_features(4, 20, 24, "uint8"),
    )
    config = AugmentationConfig(crop_size=32, scale_range=None, flip_prob=0.0, rgb_bands=[1, 2, 3],
                                brightness_delta=32, value_range=255)
    processor = SpectralMoEImageProcessor(image_mean=[50.0] * 4, image_std=[10.0] * 4, nodata_value=0)
    collate = ProcessorCollator(processor)
    for seed in range(4):
        batch = collate([SegmentationSplit(split, config, seed=seed, nodata_value=processor.nodata_value)[0]])
        pixel_values, labels = batch["pixel_values"][0], batch["labels"][0]
        missing = torch.zeros(32, 32, dtype=torch.bool)
        missing[20:], missing[:, 24:], missing[5, 5] = True, True, True
        assert (pixel_values[:, missing] == 0).all() and (labels[missing] == IGNORE_INDEX).all()
        assert (pixel_values[0, ~missing] == 5.0).all() and (labels[~missing] == 1).all()  # NIR: (100 - 50) / 10


def test_random_crop_respects_cat_max_ratio_where_possible():
    # Left half class 0, right half class 1, crop 32 of a 32 x 64 image: a crop is balanced enough (dominant share
    # < 0.75) only for offsets 9..23, about 45% of draws. With cat_max_ratio the crop is redrawn up to 10 times.
    label = torch.zeros(32, 64, dtype=torch.long)
    label[:, 32:] = 1
    image = label[None].float()

    def dominant_share(crop_label):
        counts = torch.bincount(crop_label.flatten(), minlength=2)
        return (counts.max() / counts.sum()).item()

    def balanced_crops(ratio):
        crops = [random_crop(image, label, 32, ratio, torch.Generator().manual_seed(seed))[1] for seed in range(40)]
        return sum(dominant_share(crop) < 0.75 for crop in crops)

    assert balanced_crops(0.75) >= 38
    assert balanced_crops(1.0) <= 28  # without the cap most crops are dominated
    # Impossible (one class everywhere): still a crop of the right size after the attempts run out.
    image_out, label_out = random_crop(image, torch.zeros_like(label), 32, 0.75, torch.Generator().manual_seed(0))
    assert image_out.shape == (1, 32, 32) and label_out.shape == (32, 32)
    # Ignore pixels do not count towards the share.
    ignored = label.clone()
    ignored[:, :24] = IGNORE_INDEX
    _, crop = random_crop(image, ignored, 32, 0.75, torch.Generator().manual_seed(1))
    kept = crop[crop != IGNORE_INDEX]
    assert kept.numel() and dominant_share(kept) < 0.75


def test_the_processor_masks_pixels_its_caller_marks_unmeasured():
    """`pixel_mask` marks no-data beyond `nodata_value` (e.g. augmentation padding, NaN here): such pixels are 0 after
    normalisation, 0 in the returned mask and ignored in the labels, exactly like `nodata_value` pixels."""
    image = torch.full((2, 4, 4), 30.0)
    image[:, 0, 0] = float("nan")  # unmeasured
    image[:, 3, 3] = 0.0  # the processor's own no-data value
    measured = ~image.isnan().any(0)
    processor = SpectralMoEImageProcessor(image_mean=[10.0, 10.0], image_std=[5.0, 5.0], nodata_value=0, size_divisor=4)
    batch = processor(image, segmentation_maps=torch.ones(4, 4, dtype=torch.long), pixel_mask=measured,
                      input_data_format="channels_first")
    missing = torch.zeros(4, 4, dtype=torch.bool)
    missing[0, 0] = missing[3, 3] = True
    assert torch.equal(batch["pixel_mask"][0], (~missing).long())
    assert (batch["pixel_values"][0][:, missing] == 0).all() and (batch["pixel_values"][0][:, ~missing] == 4.0).all()
    assert (batch["labels"][0][missing] == IGNORE_INDEX).all() and (batch["labels"][0][~missing] == 1).all()
    with pytest.raises(ValueError, match="NaN or infinite"):  # NaN elsewhere is still an error
        processor(image, input_data_format="channels_first")
    with pytest.raises(ValueError, match="Pixel mask 0 has shape"):
        processor(image, pixel_mask=measured[:2], input_data_format="channels_first")
