"""Which bands of an input raster feed the model, in which order, with which wavelengths and normalisation statistics.

The model's own bands are normalised by its image processor. Other band sets (another sensor through a
wavelength-conditioned encoder such as DOFA, or a cross-band setting) need their own statistics, given in a band file:
a JSON object with `band_names`, `mean` and `std` (raw units) and, for wavelength-conditioned models, `wavelengths`
(micrometres) - the `spectral_metadata.json` a dataset builder writes has exactly these keys.
"""

import json
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from ..image_processing_spectralmoe import SpectralMoEImageProcessor


@dataclass
class InputBands:
    """The bands read from a raster for the model.

    Args:
        indexes (`list[int]`): 1-based band indexes in the file, in the model's input order.
        names (`list[str]`, *optional*): their names (file descriptions, band file or the model's).
        wavelengths (`list[float]`, *optional*): their central wavelengths (micrometres).
        mean, std (`list[float]`, *optional*): normalisation statistics in raw units for a band set that is not the
            model's own; `None` when the model's image processor normalises them.
        model_kwargs (`dict`): per-call band arguments of the model (`wavelengths`, `band_names`) for a
            wavelength-conditioned encoder seeing other bands; empty otherwise.
    """

    indexes: list
    names: list | None
    wavelengths: list | None
    mean: list | None = None
    std: list | None = None
    model_kwargs: dict | None = None


def load_band_file(path: str) -> dict:
    """`band_names`, `mean`, `std` and optionally `wavelengths` of a JSON band file, checked for equal lengths."""
    with open(path) as handle:
        content = json.load(handle)
    missing = [key for key in ("band_names", "mean", "std") if content.get(key) is None]
    if missing:
        raise ValueError(f"The band file {path} lacks {missing}; it needs band_names, mean and std (and wavelengths "
                         "for a wavelength-conditioned model).")
    lengths = {key: len(content[key]) for key in ("band_names", "mean", "std", "wavelengths") if content.get(key)}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"The band file {path} has lists of different lengths: {lengths}.")
    return content


def resolve_bands(config, info, path: str, bands=None, wavelengths=None, band_file: str | None = None,
                  wavelength_conditioned: bool = False) -> InputBands:
    """Matches a raster's bands to a model, failing before any window runs, with the expected and found bands named.

    Args:
        config: the model's `SpectralMoEConfig` (`band_names`, `wavelengths`, `num_channels`).
        info (`SceneInfo`): the raster.
        path (`str`): the raster's path, for messages.
        bands (`list[int]` or `list[str]`, *optional*): 1-based indexes, or names matched against the file's band
            descriptions. Default: the band file's names or the model's, matched by description when the file names
            its bands, else every band in file order.
        wavelengths (`list[float]`, *optional*): the selected bands' wavelengths, over the band file's and the file's.
        band_file (`str`, *optional*): statistics (and names, wavelengths) of a band set other than the model's.
        wavelength_conditioned (`bool`): whether the encoder takes per-call wavelengths (DOFA).
    """
    statistics = load_band_file(band_file) if band_file else None
    described = info.descriptions if all(info.descriptions) else None
    requested = bands
    if requested is None and statistics is not None:
        requested = statistics["band_names"] if described else None
    elif requested is None and described and config.band_names:
        requested = list(config.band_names)
    indexes = _band_indexes(requested, described, info.count, path)
    names = [described[index - 1] for index in indexes] if described else None
    if names is None and statistics is not None and len(statistics["band_names"]) == len(indexes):
        names = list(statistics["band_names"])
    file_wavelengths = [info.wavelengths[index - 1] for index in indexes]
    wavelengths = wavelengths or (statistics or {}).get("wavelengths") or (
        file_wavelengths if all(value is not None for value in file_wavelengths) else None)
    found = f"{len(indexes)} bands {names or indexes} of {path}"
    expected = f"{config.num_channels} bands {config.band_names or ''}"
    model_wavelengths = list(config.wavelengths or [])
    other_wavelengths = bool(wavelengths) and bool(model_wavelengths) and list(wavelengths) != model_wavelengths
    if statistics is None:
        if len(indexes) != config.num_channels or (names and config.band_names and names != list(config.band_names)):
            raise ValueError(
                f"The model expects {expected}, found {found}. Select the model's bands with `bands` (1-based indexes "
                "or names), or give a band file with the statistics (and wavelengths) of these bands."
            )
        if other_wavelengths:
            raise ValueError(f"The model was trained on wavelengths {model_wavelengths}, found {list(wavelengths)} "
                             f"for {found}: give a band file with these bands' statistics.")
        return InputBands(indexes, names or config.band_names, wavelengths or config.wavelengths, model_kwargs={})
    if len(statistics["mean"]) != len(indexes):
        raise ValueError(f"The band file {band_file} describes {len(statistics['mean'])} bands, found {found}.")
    model_kwargs = {}
    if other_wavelengths or len(indexes) != config.num_channels:
        if not wavelength_conditioned:
            raise ValueError(f"The model expects {expected}, found {found}: only a wavelength-conditioned encoder "
                             "(DOFA) takes other band sets.")
        if not wavelengths:
            raise ValueError(f"No wavelengths for {found}: pass `wavelengths` or put them in the band file.")
        model_kwargs = {"wavelengths": [float(value) for value in wavelengths], "band_names": names}
    return InputBands(indexes, names, wavelengths, statistics["mean"], statistics["std"], model_kwargs)


def _band_indexes(requested, described, count: int, path: str) -> list[int]:
    if requested is None:
        return list(range(1, count + 1))
    if all(isinstance(band, (int, np.integer)) or str(band).isdigit() for band in requested):
        indexes = [int(band) for band in requested]
        if not all(1 <= index <= count for index in indexes):
            raise ValueError(f"Band indexes {indexes} are out of range: {path} has bands 1..{count}.")
        return indexes
    if not described:
        raise ValueError(f"Bands {list(requested)} are named, but {path} has no band descriptions: select the bands "
                         f"by 1-based index (it has {count}).")
    lowered = [name.strip().lower() for name in described]
    missing = [name for name in requested if str(name).strip().lower() not in lowered]
    if missing:
        raise ValueError(f"Expected bands {list(requested)}, found {described} in {path}: {missing} missing.")
    return [lowered.index(str(name).strip().lower()) + 1 for name in requested]


def band_processor(processor: SpectralMoEImageProcessor, bands: InputBands) -> SpectralMoEImageProcessor:
    """The processor that normalises these bands: the model's own, or one with the band file's statistics."""
    if processor.do_resize:
        raise ValueError("Windows are predicted at the input's resolution: the processor must not resize.")
    if bands.mean is None:
        return processor
    return SpectralMoEImageProcessor(image_mean=bands.mean, image_std=bands.std, nodata_value=processor.nodata_value,
                                     size_divisor=processor.size_divisor)


def normalize_window(processor: SpectralMoEImageProcessor, raw: np.ndarray, valid: np.ndarray) -> torch.Tensor:
    """(1, C, h, w) normalised bands of one window in raw units; invalid pixels become 0, as in training."""
    return processor(raw, input_data_format="channels_first", pixel_mask=valid, return_tensors="pt")["pixel_values"]


def warn_about_units(info, processor: SpectralMoEImageProcessor, path: str) -> None:
    """Warnings for files whose values are unlikely to be in the raw units of the normalisation statistics."""
    if any(scale != 1 for scale in info.scales) or any(offset != 0 for offset in info.offsets):
        warnings.warn(f"{path} declares scales {info.scales} and offsets {info.offsets}; values are read unscaled, in "
                      "the raw units the normalisation statistics must be in.", stacklevel=3)
    if np.issubdtype(np.dtype(info.dtype), np.integer):
        limits = np.iinfo(np.dtype(info.dtype))
        outside = [mean for mean in processor.image_mean if not limits.min <= mean <= limits.max]
        if outside:
            warnings.warn(f"{path} holds {info.dtype} values, but the model's band means {outside} lie outside "
                          f"[{limits.min}, {limits.max}]: the model was trained on data in other units.", stacklevel=3)


__all__ = ["InputBands", "band_processor", "load_band_file", "normalize_window", "resolve_bands", "warn_about_units"]
