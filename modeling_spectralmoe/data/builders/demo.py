"""Build the synthetic cross-domain dataset of the offline demo.

    spectralmoe-build-demo --output-dir demo/data

Source sensor: `train` and `validation`; unseen targets: `target_other_sensor` (other band response, gain, haze, noise)
and `target_winter` (dormant vegetation, weaker light). 4 bands (NIR, R, G, B), 8-bit, 4 land-cover classes.
"""

import argparse
from pathlib import Path

import datasets

from .demo_scenes import BAND_NAMES, CLASS_NAMES, WAVELENGTHS_UM, demo_domains, scenes
from ..schema import (
    BandStatistics, SpectralMetadata, segmentation_features, with_native_numpy_format,
)


SPLITS = {  # split -> (domain, number of scenes, seed)
    "train": ("source", 96, 0),
    "validation": ("source", 24, 1),
    "target_other_sensor": ("target_other_sensor", 24, 2),
    "target_winter": ("target_winter", 24, 3),
}


def build_split(domain, count: int, size: int, seed: int) -> datasets.Dataset:
    def generate():
        for image, label, image_id in scenes(domain, count, size, seed):
            yield {"pixel_values": image, "label": label, "domain": domain.name, "image_id": image_id}

    return datasets.Dataset.from_generator(generate, features=segmentation_features(len(BAND_NAMES), size, size,
                                                                                    "uint8"))


def band_statistics(split: datasets.Dataset) -> tuple[list[float], list[float]]:
    statistics = BandStatistics(len(BAND_NAMES))
    for example in with_native_numpy_format(split):
        statistics.update(example["pixel_values"])
    return list(statistics.mean), list(statistics.std)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", default="demo/data")
    parser.add_argument("--size", type=int, default=96, help="scene side in pixels")
    args = parser.parse_args(argv)
    domains = demo_domains()
    dataset = datasets.DatasetDict({
        split: build_split(domains[domain], count, args.size, seed) for split, (domain, count, seed) in SPLITS.items()
    })
    mean, std = band_statistics(dataset["train"])
    output = Path(args.output_dir)
    dataset.save_to_disk(str(output))
    SpectralMetadata(
        name="spectralmoe-synthetic-demo", band_names=BAND_NAMES, wavelengths=WAVELENGTHS_UM, mean=mean, std=std,
        id2label=dict(enumerate(CLASS_NAMES)), source_split="train",
        target_splits=[split for split in SPLITS if split.startswith("target")],
    ).save(str(output))
    print(f"Wrote {', '.join(f'{split}: {len(ds)}' for split, ds in dataset.items())} scenes to {output}")


if __name__ == "__main__":
    main()
