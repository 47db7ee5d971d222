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
    size happen, for training, evaluation and inference alike. `bands` (from `split_bands`): the split's own band
    names and wavelengths, passed to the processor (statistics per band) and with every batch to the model."""

    def __init__(self, processor: SpectralMoEImageProcessor, bands: dict | None = None):
        self.processor = processor
        self.bands = bands or {}

    def __call__(self, samples):
        images, labels = zip(*samples)
        batch = self.processor(
            images=list(images), segmentation_maps=list(labels), pixel_mask=[~image.isnan().any(0) for image in images],
            input_data_format="channels_first", return_tensors="pt", **self.bands,
        )
        return {"pixel_values": batch["pixel_values"], "labels": batch["labels"], "pixel_mask": batch["pixel_mask"],
                **self.bands}


def split_bands(split, metadata, model_config) -> dict:
    """`{"band_names", "wavelengths"}` of a split whose domain has other bands than the model (`metadata.bands_of`),
    for the processor and the model; `{}` when they are the model's. A model whose encoder is not wavelength-conditioned
    reads other bands of the same count as its own (a cross-band evaluation such as Potsdam -> Vaihingen)."""
    domains = split.unique("domain") if len(split) else []
    band_sets = {domain: metadata.bands_of(domain) for domain in domains}
    if len({(tuple(names), tuple(wavelengths or ())) for names, wavelengths in band_sets.values()}) > 1:
        raise ValueError(f"A split holds domains with different bands ({band_sets}); expected one band set per split.")
    names, wavelengths = next(iter(band_sets.values()), (metadata.band_names, metadata.wavelengths))
    if names == list(model_config.band_names or names) and wavelengths == model_config.wavelengths:
        return {}
    if not model_config.uses_dofa:
        if len(names) != model_config.num_channels:
            raise ValueError(f"Domain(s) {domains} have {len(names)} bands {names}, the model {model_config.num_channels}"
                             f" {model_config.band_names}: another band count needs a wavelength-conditioned encoder "
                             "(DOFA).")
        return {}
    if wavelengths is None:
        raise ValueError(f"Domain(s) {domains} have bands {names} without wavelengths; the DOFA encoder needs them.")
    return {"band_names": list(names), "wavelengths": list(wavelengths)}


def evaluation_loader(
    split, processor, batch_size: int, process_index: int = 0, num_processes: int = 1, num_workers: int = 0,
    bands: dict | None = None,
) -> DataLoader:
    """This process's share of a split: every `num_processes`-th image, with no image repeated to even out shards,
    so confusion matrices summed over processes equal those of a single process. `bands`: see `ProcessorCollator`."""
    dataset = torch.utils.data.Subset(SegmentationSplit(split), range(process_index, len(split), num_processes))
    return DataLoader(dataset, batch_size=batch_size, collate_fn=ProcessorCollator(processor, bands),
                      num_workers=num_workers)
