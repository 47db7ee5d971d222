"""Training and evaluation data from a `datasets` split in the schema of DESIGN.md."""

import torch
from torch.utils.data import DataLoader, Dataset

from ..dataset_schema import with_native_numpy_format
from ..image_processing_spectralmoe import SpectralMoEImageProcessor
from .augmentation import AugmentationConfig, augment


class SegmentationSplit(Dataset):
    """One split of the dataset as (image, label) tensors in raw units; with an `AugmentationConfig`, a random
    augmentation whose randomness depends only on (seed, epoch, index), so a resumed run sees the same crops."""

    def __init__(self, split, augmentation: AugmentationConfig | None = None, seed: int = 0):
        self.split = with_native_numpy_format(split)  # plain numpy format would widen uint8 tiles to int64
        self.augmentation = augmentation
        self.seed = seed
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
        batch = self.processor(
            images=list(images), segmentation_maps=list(labels), input_data_format="channels_first",
            return_tensors="pt",
        )
        return {"pixel_values": batch["pixel_values"], "labels": batch["labels"]}


def evaluation_loader(
    split, processor, batch_size: int, process_index: int = 0, num_processes: int = 1, num_workers: int = 0
) -> DataLoader:
    """This process's share of a split: every `num_processes`-th image, with no image repeated to even out shards,
    so confusion matrices summed over processes equal those of a single process."""
    dataset = torch.utils.data.Subset(SegmentationSplit(split), range(process_index, len(split), num_processes))
    return DataLoader(dataset, batch_size=batch_size, collate_fn=ProcessorCollator(processor), num_workers=num_workers)
