"""Training and evaluation data from a `datasets` split in the schema of DESIGN.md."""

import math

import torch
from torch.utils.data import DataLoader, Dataset

from ..dataset_schema import IGNORE_INDEX, with_native_numpy_format
from ..image_processing_spectralmoe import SpectralMoEImageProcessor
from .augmentation import AugmentationConfig, augment


class SegmentationSplit(Dataset):
    """One split of the dataset as (image, label) tensors in raw units, no-data pixels (equal to `nodata` in every
    band) set to NaN; with an `AugmentationConfig`, a random augmentation whose randomness depends only on
    (seed, epoch, index), so a resumed run sees the same crops."""

    def __init__(self, split, augmentation: AugmentationConfig | None = None, seed: int = 0, nodata=None):
        self.split = with_native_numpy_format(split)  # plain numpy format would widen uint8 tiles to int64
        self.augmentation = augmentation
        self.seed = seed
        self.nodata = nodata
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        example = self.split[int(index)]
        image = torch.from_numpy(example["pixel_values"].astype("float32"))
        label = torch.from_numpy(example["label"].astype("int64"))
        if self.nodata is not None:
            missing = image.isnan() if math.isnan(self.nodata) else image == self.nodata
            image[:, missing.all(0)] = float("nan")
        if self.augmentation is not None:
            generator = torch.Generator().manual_seed(hash((self.seed, self.epoch, int(index))) % 2**63)
            image, label = augment(image, label, self.augmentation, generator)
        return image, label


class ProcessorCollator:
    """Batches (image, label) pairs through the image processor: per-band normalisation, no-data masking and padding
    to the patch size happen in one place for training, evaluation and inference."""

    def __init__(self, processor: SpectralMoEImageProcessor):
        self.processor = processor

    def __call__(self, samples):
        images, labels = zip(*samples)
        missing = [image.isnan().any(0) for image in images]  # no-data and augmentation padding
        batch = self.processor(
            images=[image.nan_to_num(0.0) for image in images], segmentation_maps=list(labels),
            input_data_format="channels_first", return_tensors="pt",
        )
        pixel_values, labels = batch["pixel_values"], batch["labels"]
        for index, mask in enumerate(missing):  # 0 after normalisation, as the processor's own padding, and ignored
            height, width = mask.shape
            pixel_values[index, :, :height, :width].masked_fill_(mask, 0.0)
            labels[index, :height, :width].masked_fill_(mask, IGNORE_INDEX)
        return {"pixel_values": pixel_values, "labels": labels}


def evaluation_loader(
    split, processor, batch_size: int, process_index: int = 0, num_processes: int = 1, num_workers: int = 0
) -> DataLoader:
    """This process's share of a split: every `num_processes`-th image, with no image repeated to even out shards,
    so confusion matrices summed over processes equal those of a single process."""
    dataset = torch.utils.data.Subset(SegmentationSplit(split), range(process_index, len(split), num_processes))
    return DataLoader(dataset, batch_size=batch_size, collate_fn=ProcessorCollator(processor), num_workers=num_workers)
