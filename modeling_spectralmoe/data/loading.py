"""Training and evaluation data from a `datasets` split in the package's schema (`data.schema`)."""

import torch
from torch.utils.data import DataLoader, Dataset

from ..image_processing_spectralmoe import SpectralMoEImageProcessor, nodata_pixels
from .augmentation import AugmentationConfig, augment
from .schema import with_native_numpy_format


class SegmentationSplit(Dataset):
    """One split of the dataset as (image, label) tensors in raw units; with an `AugmentationConfig`, a random
    augmentation whose randomness depends only on (seed, epoch, index), so a resumed run sees the same crops.

    Augmented images carry their no-data pixels (those the processor's `nodata_value` marks, and the padding added by
    cropping) as NaN, so resizing spreads them instead of blending the no-data value into real pixels; the collator
    hands them to the processor as unmeasured pixels.
    """

    def __init__(self, split, augmentation: AugmentationConfig | None = None, seed: int = 0, nodata_value=None):
        self.split = with_native_numpy_format(split)  # plain numpy format would widen uint8 tiles to int64
        self.augmentation = augmentation
        self.seed = seed
        self.nodata_value = nodata_value
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        example = self.split[int(index)]
        image = torch.from_numpy(example["pixel_values"].astype("float32"))
        label = torch.from_numpy(example["label"].astype("int64"))
        if self.augmentation is not None:
            image[:, nodata_pixels(image, self.nodata_value)] = float("nan")
            generator = torch.Generator().manual_seed(hash((self.seed, self.epoch, int(index))) % 2**63)
            image, label = augment(image, label, self.augmentation, generator)
        return image, label


class ProcessorCollator:
    """Batches (image, label) pairs through the image processor, the one place where normalisation, no-data masking
    (pixels equal to its `nodata_value`, and NaN pixels, which augmentation marks unmeasured) and padding to the patch
    size happen, for training, evaluation and inference alike."""

    def __init__(self, processor: SpectralMoEImageProcessor):
        self.processor = processor

    def __call__(self, samples):
        images, labels = zip(*samples)
        batch = self.processor(
            images=list(images), segmentation_maps=list(labels), pixel_mask=[~image.isnan().any(0) for image in images],
            input_data_format="channels_first", return_tensors="pt",
        )
        return {"pixel_values": batch["pixel_values"], "labels": batch["labels"]}


def evaluation_loader(
    split, processor, batch_size: int, process_index: int = 0, num_processes: int = 1, num_workers: int = 0
) -> DataLoader:
    """This process's share of a split: every `num_processes`-th image, with no image repeated to even out shards,
    so confusion matrices summed over processes equal those of a single process."""
    dataset = torch.utils.data.Subset(SegmentationSplit(split), range(process_index, len(split), num_processes))
    return DataLoader(dataset, batch_size=batch_size, collate_fn=ProcessorCollator(processor), num_workers=num_workers)
