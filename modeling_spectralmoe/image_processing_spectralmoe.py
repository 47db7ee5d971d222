"""Image processor of SpectralMoE: per-band normalisation of spectral imagery with any band count and dtype, padding or
resizing to the patch grid, no-data masking, and semantic post-processing."""

import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import AutoImageProcessor
from transformers.image_processing_outputs import SemanticSegmentationPostProcessorOutput
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature, get_size_dict
from transformers.image_utils import ChannelDimension
from transformers.processing_utils import ImagesKwargs

from .configuration_spectralmoe import SpectralMoEConfig
from .stac_mlm import write_stac_mlm


IGNORE_INDEX = 255
UNSEEN_BAND_RULE = (
    "a band the processor's statistics do not cover takes those of the trained band with the nearest central "
    "wavelength (else the trained band of the same name); never statistics of the images or labels"
)
# ImageNet statistics in 8-bit digital numbers (the usual [0, 1] values x 255): the default suits uint8 RGB input.
IMAGENET_MEAN_DN = (123.675, 116.28, 103.53)
IMAGENET_STD_DN = (58.395, 57.12, 57.375)
_NUMPY_DTYPES = {torch.float32: np.float32, torch.int64: np.int64}


class SpectralMoEImageProcessorKwargs(ImagesKwargs, total=False):
    """Arguments of [`SpectralMoEImageProcessor`] beyond transformers' `ImagesKwargs`; `from_pretrained` accepts them
    as overrides."""

    num_channels: int | None
    size_divisor: int | None
    nodata_value: float | None
    input_dtype: str | None
    band_names: list[str] | None
    wavelengths: list[float] | None


class SpectralMoEImageProcessor(BaseImageProcessor):
    r"""
    Prepares spectral images (any number of bands, uint8 / uint16 / int16 / float) for
    [`SpectralMoEForSemanticSegmentation`] and turns its logits into label maps.

    Per image: bands are moved first, checked for NaN / inf, normalised per band with statistics in the input's raw
    units (digital numbers, reflectance x 10000, ...; there is no implicit division by 255, so these statistics are the
    single source of normalisation), no-data pixels are set to 0 and masked, then the image is optionally resized to
    `size` and padded at the bottom and right to a multiple of `size_divisor`.

    Args:
        image_mean (`float` or `list[float]`, *optional*, defaults to ImageNet's mean x 255):
            Mean of each band in the input's raw units. A single value applies to every band (needs `num_channels`).
        image_std (`float` or `list[float]`, *optional*, defaults to ImageNet's std x 255):
            Standard deviation of each band in the input's raw units; same form as `image_mean`.
        num_channels (`int`, *optional*):
            Number of bands. Defaults to the length of `image_mean`; required when both statistics are single values.
        do_pad (`bool`, *optional*, defaults to `True`):
            Pad the bottom and right of every image with 0 (after normalisation; labels with 255) to the batch's largest
            height and width rounded up to a multiple of `size_divisor`.
        size_divisor (`int`, *optional*, defaults to 16):
            Multiple the padded height and width must have (the visual encoder's patch size).
        do_resize (`bool`, *optional*, defaults to `False`):
            Resize every image to `size` (bilinear, antialiased; labels and masks nearest) before padding.
        size (`dict[str, int]`, *optional*):
            `{"height": int, "width": int}` for `do_resize`; an int means a square.
        nodata_value (`float`, *optional*):
            Raw value marking no-data: a pixel equal to it in **all** bands (NaN matches NaN) is set to 0 after
            normalisation, is 0 in `pixel_mask` and 255 (ignore) in `labels`.
        input_dtype (`str`, *optional*):
            Numeric type of the raw bands the statistics describe (`"uint8"`, `"uint16"`, `"int16"`, `"float32"`...):
            their value range, recorded for geospatial tools (the STAC MLM item's bands); any dtype is accepted.
        band_names (`list[str]`, *optional*):
            Name of each band the statistics belong to (the bands the model was trained on).
        wavelengths (`list[float]`, *optional*):
            Central wavelength (micrometres) of each of those bands.

    Other band sets (per call, `preprocess(..., band_names=..., wavelengths=...)`, for wavelength-conditioned encoders)
    take their statistics by `UNSEEN_BAND_RULE`: see `band_statistics`.
    """

    model_input_names = ["pixel_values", "pixel_mask"]
    valid_kwargs = SpectralMoEImageProcessorKwargs

    def __init__(
        self,
        image_mean: float | list[float] = IMAGENET_MEAN_DN,
        image_std: float | list[float] = IMAGENET_STD_DN,
        num_channels: int | None = None,
        do_pad: bool = True,
        size_divisor: int = 16,
        do_resize: bool = False,
        size: int | dict[str, int] | None = None,
        nodata_value: float | None = None,
        band_names: list[str] | None = None,
        wavelengths: list[float] | None = None,
        input_dtype: str | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.image_mean, self.image_std = _per_band_statistics(image_mean, image_std, num_channels)
        self.num_channels = len(self.image_mean)
        for name, values in (("band_names", band_names), ("wavelengths", wavelengths)):
            if values is not None and len(values) != self.num_channels:
                raise ValueError(f"`{name}` has {len(values)} entries for {self.num_channels} bands of statistics.")
        self.band_names = None if band_names is None else [str(name) for name in band_names]
        self.wavelengths = None if wavelengths is None else [float(value) for value in wavelengths]
        if size_divisor < 1:
            raise ValueError(f"`size_divisor` must be a positive integer, found {size_divisor}.")
        if do_resize and size is None:
            raise ValueError("`do_resize=True` needs `size` ({'height': int, 'width': int}).")
        self.size = None if size is None else get_size_dict(size)
        if self.size is not None and set(self.size) != {"height", "width"}:
            raise ValueError(f"`size` must have the keys 'height' and 'width', found {sorted(self.size)}.")
        self.do_pad = do_pad
        self.size_divisor = size_divisor
        self.do_resize = do_resize
        self.nodata_value = nodata_value
        self.input_dtype = None if input_dtype is None else str(input_dtype)

    def preprocess(
        self,
        images,
        segmentation_maps=None,
        input_data_format: str | ChannelDimension | None = None,
        return_tensors: str | None = "pt",
        pixel_mask=None,
        band_names: list[str] | None = None,
        wavelengths: list[float] | None = None,
    ) -> BatchFeature:
        r"""
        Normalises, masks, resizes and pads a batch of images (and their label maps).

        Args:
            images (`np.ndarray`, `torch.Tensor`, `PIL.Image.Image`, or a list of them):
                One image, a list of images, or a 4-D batch. An image is (C, H, W) or (H, W, C) in any numeric dtype, or
                (H, W) for a single band; PIL images are read bands-last.
            segmentation_maps (same forms as `images`, each (H, W), *optional*):
                Class index per pixel, 255 = ignore; same height and width as its image.
            input_data_format (`str` or `ChannelDimension`, *optional*):
                `"channels_first"` or `"channels_last"`. Inferred when only one of the first and last axes has
                `num_channels` entries; otherwise required.
            return_tensors (`str`, *optional*, defaults to `"pt"`):
                `"pt"` for torch tensors, `"np"` for numpy arrays.
            pixel_mask (same forms as `segmentation_maps`, each (H, W) bool or 0/1, *optional*):
                Pixels that hold a measurement. A pixel where it is 0 is no-data whatever its values (NaN allowed), like
                a `nodata_value` pixel: 0 after normalisation, 0 in the returned `pixel_mask`, 255 in `labels`. Used
                for pixels that augmentation added or resampled from no-data.
            band_names (`list[str]`, *optional*), wavelengths (`list[float]`, *optional*):
                The images' own bands when they are not the processor's (another sensor, for a wavelength-conditioned
                encoder): each band's statistics are picked by `band_statistics`, and both lists are returned for the
                model (`model(**inputs)` then runs on these bands).

        Returns:
            [`BatchFeature`] with
            - **pixel_values** (`float32` of shape `(batch_size, num_channels, height, width)`): normalised bands.
            - **pixel_mask** (`int64` of shape `(batch_size, height, width)`): 1 for real pixels, 0 for padding and
              no-data.
            - **labels** (`int64` of shape `(batch_size, height, width)`, only with `segmentation_maps`): class indices,
              255 for ignore, no-data and padding.
            - **wavelengths** (`list[float]`), **band_names** (`list[str]`): only when given.
        """
        images = _as_list(images, single_ndim=3)
        maps = None if segmentation_maps is None else _as_list(segmentation_maps, single_ndim=2)
        if maps is not None and len(maps) != len(images):
            raise ValueError(f"Got {len(images)} images but {len(maps)} segmentation maps.")
        masks = None if pixel_mask is None else _as_list(pixel_mask, single_ndim=2)
        if masks is not None and len(masks) != len(images):
            raise ValueError(f"Got {len(images)} images but {len(masks)} pixel masks.")

        per_call = band_names is not None or wavelengths is not None
        mean, std, _ = self.band_statistics(band_names, wavelengths) if per_call else (
            self.image_mean, self.image_std, None)
        pixel_values, pixel_masks, labels = [], [], []
        for index, image in enumerate(images):
            bands = self._to_bands(image, input_data_format, index, len(mean))
            measured = None if masks is None else _to_label(masks[index], bands.shape[-2:], index, "Pixel mask").bool()
            valid = self._valid_pixels(bands, index, measured)
            pixel_values.append(_normalize(bands, mean, std).masked_fill(~valid, 0.0))
            pixel_masks.append(valid.long())
            if maps is not None:
                labels.append(_to_label(maps[index], bands.shape[-2:], index).masked_fill(~valid, IGNORE_INDEX))

        if self.do_resize:
            size = (self.size["height"], self.size["width"])
            pixel_values = [_resize(pixels, size, "bilinear") for pixels in pixel_values]
            pixel_masks = [_resize(mask, size, "nearest-exact") for mask in pixel_masks]
            labels = [_resize(label, size, "nearest-exact") for label in labels]
        if self.do_pad:
            size = self._padded_size(pixel_values)
            pixel_values = [_pad(pixels, size, 0.0) for pixels in pixel_values]
            pixel_masks = [_pad(mask, size, 0) for mask in pixel_masks]
            labels = [_pad(label, size, IGNORE_INDEX) for label in labels]
        elif len({tuple(pixels.shape[-2:]) for pixels in pixel_values}) > 1:
            raise ValueError("Images of different sizes cannot be batched without `do_pad=True` or `do_resize=True`.")

        data = {"pixel_values": torch.stack(pixel_values), "pixel_mask": torch.stack(pixel_masks)}
        if maps is not None:
            data["labels"] = torch.stack(labels)
        features = BatchFeature(data=data, tensor_type=return_tensors)
        if per_call:  # plain lists, passed through to the model as they are
            features.update({key: value for key, value in (("band_names", band_names), ("wavelengths", wavelengths))
                             if value is not None})
        return features

    def save_pretrained(self, save_directory, *args, **kwargs):
        """Saves `preprocessor_config.json` and completes the folder's STAC MLM description with the statistics."""
        saved = super().save_pretrained(save_directory, *args, **kwargs)
        write_stac_mlm(save_directory)
        return saved

    def image_size(self, image, input_data_format=None, num_channels: int | None = None) -> tuple[int, int]:
        """(height, width) of one raw image of `num_channels` bands (defaults to the processor's), by the layout rule
        of `preprocess`: the size `target_sizes` of `post_process_semantic_segmentation` should name."""
        bands = self._to_bands(image, input_data_format, 0, num_channels or self.num_channels)
        return tuple(bands.shape[-2:])

    def band_statistics(self, band_names: list[str] | None = None, wavelengths: list[float] | None = None
                        ) -> tuple[list[float], list[float], list[str]]:
        r"""
        Statistics for a band set other than the processor's, by `UNSEEN_BAND_RULE`: a band with a wavelength takes
        those of the processor's band with the nearest wavelength (the same band when the wavelengths agree);
        without one, those of the processor's band of the same name (case-insensitive). Never computed from the
        images or labels, so evaluation on a target sensor uses only what the model was trained with.

        Returns:
            `(mean, std, sources)`, where `sources[i]` says which processor band band `i` took them from.
        """
        count = len(wavelengths if wavelengths is not None else band_names)
        if band_names is not None and wavelengths is not None and len(band_names) != count:
            raise ValueError(f"Got {len(band_names)} band names for {count} wavelengths.")
        known_names = [name.strip().lower() for name in self.band_names or []]
        mean, std, sources = [], [], []
        for band in range(count):
            name = None if band_names is None else band_names[band]
            if wavelengths is not None and self.wavelengths is not None:
                source = min(range(self.num_channels), key=lambda i: abs(self.wavelengths[i] - wavelengths[band]))
                how = f"nearest wavelength {self.wavelengths[source]:g} um"
            elif name is not None and name.strip().lower() in known_names:
                source, how = known_names.index(name.strip().lower()), "same name"
            else:
                raise ValueError(
                    f"No statistics for band {band} ({name or 'unnamed'}, wavelength "
                    f"{None if wavelengths is None else wavelengths[band]}): the processor's bands are "
                    f"{self.band_names} with wavelengths {self.wavelengths}; give the band's wavelength (and the "
                    "processor's `wavelengths`) or a name among them."
                )
            label = self.band_names[source] if self.band_names else f"band {source}"
            mean.append(self.image_mean[source])
            std.append(self.image_std[source])
            sources.append(f"{label} ({how})")
        return mean, std, sources

    def post_process_semantic_segmentation(
        self, outputs, target_sizes=None, pixel_mask=None, return_segmentation_scores: bool = False
    ) -> list[torch.Tensor] | list[SemanticSegmentationPostProcessorOutput]:
        r"""
        Turns per-class scores into label maps.

        Args:
            outputs ([`SpectralMoESemanticSegmenterOutput`] or any object with `logits`):
                `logits` of shape `(batch_size, num_labels, height, width)` at the resolution of `pixel_values`.
            target_sizes (`list[tuple[int, int]]` or `torch.Tensor` of shape `(batch_size, 2)`, *optional*):
                Original (height, width) of each image. The bottom/right padding added by `preprocess` is cut off
                first (it is not part of the image), then the scores are resized bilinearly (align_corners=False) to
                this size. Without it, maps keep the logits' resolution, padding included.
            pixel_mask (`torch.Tensor` of shape `(batch_size, height, width)`, *optional*):
                The `pixel_mask` that `preprocess` returned: its no-data pixels are 255 (ignore) in the label maps,
                not a class.
            return_segmentation_scores (`bool`, *optional*, defaults to `False`):
                Also return the per-class scores the maps are the argmax of, as transformers' segmenters
                (Mask2Former, EoMT) do.

        Returns:
            `list[torch.LongTensor]`: one (height, width) map of class indices per image, 255 at no-data; with
            `return_segmentation_scores`, one [`SemanticSegmentationPostProcessorOutput`] per image instead, holding
            that map as `segmentation` and the scores, of shape `(num_labels, height, width)`, as
            `segmentation_scores`.
        """
        logits = outputs.logits
        if pixel_mask is not None and tuple(pixel_mask.shape[-2:]) != tuple(logits.shape[-2:]):
            raise ValueError(f"`pixel_mask` has shape {tuple(pixel_mask.shape)}, the logits {tuple(logits.shape)}.")
        if target_sizes is not None and len(target_sizes) != len(logits):
            raise ValueError(f"Got {len(logits)} logits but {len(target_sizes)} target sizes.")
        results = []
        for index, scores in enumerate(logits):
            mask = None if pixel_mask is None else pixel_mask[index]
            if target_sizes is not None:
                scores, mask = self._to_target_size(scores, mask, target_sizes[index])
            label_map = scores.argmax(dim=0)
            if mask is not None:
                label_map = label_map.masked_fill(mask.to(label_map.device) == 0, IGNORE_INDEX)
            results.append(SemanticSegmentationPostProcessorOutput(
                data={"segmentation": label_map, "segmentation_scores": scores}
            ) if return_segmentation_scores else label_map)
        return results

    def _to_target_size(self, scores: torch.Tensor, mask: torch.Tensor | None, target_size
                        ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(num_labels, H, W) scores and (H, W) mask of the padded input cut to the image and resized to
        `target_size`."""
        height, width = (int(length) for length in target_size)
        # Without resizing, the image occupies the top-left (height, width) of the padded input; with resizing,
        # the top-left `size`.
        valid_height, valid_width = (self.size["height"], self.size["width"]) if self.do_resize else (height, width)
        scores = F.interpolate(scores[None, :, :valid_height, :valid_width], size=(height, width), mode="bilinear",
                               align_corners=False)[0]
        if mask is not None:
            mask = _resize(mask[:valid_height, :valid_width], (height, width), "nearest-exact")
        return scores, mask

    def _to_bands(self, image, input_data_format, index: int, num_channels: int) -> torch.Tensor:
        """One image as a float32 (C, H, W) tensor in raw units."""
        if isinstance(image, Image.Image):
            if len(image.getbands()) != num_channels:
                raise ValueError(
                    f"Image {index} is a PIL image with {len(image.getbands())} bands (mode {image.mode}) but "
                    f"{num_channels} bands are expected: pass the model's bands as a (C, H, W) array with "
                    "`input_data_format='channels_first'` (the pipeline takes PIL images for 3-band R, G, B models)."
                )
            input_data_format = ChannelDimension.LAST
        bands = _to_tensor(image, torch.float32)
        if bands.ndim == 2:
            return _check_band_count(bands[None], index, num_channels)
        if bands.ndim != 3:
            raise ValueError(f"Image {index} must have 2 or 3 dimensions, found shape {tuple(bands.shape)}.")
        if _channel_dimension(bands.shape, input_data_format, index, num_channels) == ChannelDimension.LAST:
            bands = bands.permute(2, 0, 1)
        return _check_band_count(bands, index, num_channels)

    def _valid_pixels(self, bands: torch.Tensor, index: int, measured: torch.Tensor | None = None) -> torch.Tensor:
        """(H, W) bool, False at no-data (`nodata_value` pixels, and pixels not `measured`); raises on NaN / inf
        anywhere else."""
        nodata = nodata_pixels(bands, self.nodata_value)
        if measured is not None:
            nodata |= ~measured
        non_finite = ~bands.isfinite() & ~nodata
        if non_finite.any():
            per_band = non_finite.flatten(1).sum(dim=1).tolist()
            where = ", ".join(f"band {band}: {count}" for band, count in enumerate(per_band) if count)
            raise ValueError(
                f"Image {index} has {sum(per_band)} NaN or infinite values ({where}). If they mark missing data, set "
                "`nodata_value` (a pixel equal to it in all bands, NaN included, becomes ignore); otherwise fill them "
                "before processing."
            )
        return ~nodata

    def _padded_size(self, images: list[torch.Tensor]) -> tuple[int, int]:
        """The batch's largest height and width, each rounded up to a multiple of `size_divisor`."""
        height = max(image.shape[-2] for image in images)
        width = max(image.shape[-1] for image in images)
        return (
            math.ceil(height / self.size_divisor) * self.size_divisor,
            math.ceil(width / self.size_divisor) * self.size_divisor,
        )


def _channel_dimension(shape, input_data_format, index: int, num_channels: int) -> ChannelDimension:
    if input_data_format is not None:
        return ChannelDimension(input_data_format)
    first, last = shape[0] == num_channels, shape[-1] == num_channels
    if first != last:
        return ChannelDimension.FIRST if first else ChannelDimension.LAST
    found = "both the first and the last axis have" if first else "neither the first nor the last axis has"
    raise ValueError(
        f"Cannot tell the band axis of image {index} with shape {tuple(shape)}: {found} {num_channels} entries (the "
        "band count). Pass `input_data_format='channels_first'` or `'channels_last'` (PIL images are always read "
        "bands-last; a PIL image with another band count than the model's is the wrong input)."
    )


def _check_band_count(bands: torch.Tensor, index: int, num_channels: int) -> torch.Tensor:
    if bands.shape[0] != num_channels:
        raise ValueError(
            f"Image {index} has {bands.shape[0]} bands but the processor expects {num_channels} (one per "
            "`image_mean` / `image_std` entry, or per call-time band); if its bands lie on the other axis, pass "
            "`input_data_format`."
        )
    return bands


def _normalize(bands: torch.Tensor, mean: list[float], std: list[float]) -> torch.Tensor:
    mean = torch.tensor(mean, dtype=torch.float32)[:, None, None]
    std = torch.tensor(std, dtype=torch.float32)[:, None, None]
    return (bands - mean) / std


def nodata_pixels(bands: torch.Tensor, nodata_value: float | None) -> torch.Tensor:
    """(H, W) bool: True where every band of the (C, H, W) raw image equals `nodata_value` (NaN matches NaN)."""
    if nodata_value is None:
        return torch.zeros(bands.shape[-2:], dtype=torch.bool)
    if math.isnan(nodata_value):
        return bands.isnan().all(dim=0)
    return (bands == nodata_value).all(dim=0)


def _per_band_statistics(image_mean, image_std, num_channels: int | None) -> tuple[list[float], list[float]]:
    """Checks the statistics against each other and `num_channels`, broadcasting single values to every band."""
    mean = [float(value) for value in np.atleast_1d(image_mean)]
    std = [float(value) for value in np.atleast_1d(image_std)]
    if num_channels is None:
        num_channels = max(len(mean), len(std))
    mean = mean * num_channels if len(mean) == 1 else mean
    std = std * num_channels if len(std) == 1 else std
    if len(mean) != num_channels or len(std) != num_channels:
        raise ValueError(
            f"`image_mean` has {len(mean)} values and `image_std` {len(std)}, but {num_channels} bands are expected "
            "(one value per band, or a single value for all)."
        )
    if any(value <= 0 for value in std):
        raise ValueError(f"`image_std` must be positive, found {std}.")
    return mean, std


def _as_list(inputs, single_ndim: int) -> list:
    """A list of per-image items from one item, a list, or a batched array with one more axis than `single_ndim`."""
    if isinstance(inputs, (list, tuple)):
        return list(inputs)
    if isinstance(inputs, (np.ndarray, torch.Tensor)) and inputs.ndim == single_ndim + 1:
        return list(inputs)
    return [inputs]


def _to_tensor(image, dtype: torch.dtype) -> torch.Tensor:
    """A CPU tensor of `dtype` from a numpy array, torch tensor or PIL image."""
    if isinstance(image, torch.Tensor):
        return image.detach().to(device="cpu", dtype=dtype)
    # np.asarray with a dtype also converts non-native byte orders (e.g. big-endian GeoTIFF reads) that torch rejects.
    return torch.from_numpy(np.asarray(image, dtype=_NUMPY_DTYPES[dtype]))


def _to_label(segmentation_map, size: torch.Size, index: int, name: str = "Segmentation map") -> torch.Tensor:
    label = _to_tensor(segmentation_map, torch.int64)
    if label.shape != size:
        raise ValueError(f"{name} {index} has shape {tuple(label.shape)} but its image is {tuple(size)} (height, width).")
    return label


def _resize(image: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """Resizes a (C, H, W) or (H, W) tensor; bilinear is antialiased, like transformers' other processors."""
    batched = image[None] if image.ndim == 3 else image[None, None]
    options = {"align_corners": False, "antialias": True} if mode == "bilinear" else {}
    resized = F.interpolate(batched.float(), size=size, mode=mode, **options)
    return resized.reshape(*image.shape[:-2], *size).to(image.dtype)


def _pad(image: torch.Tensor, size: tuple[int, int], value: float) -> torch.Tensor:
    """Pads the bottom and right of a (..., H, W) tensor to `size`."""
    return F.pad(image, (0, size[1] - image.shape[-1], 0, size[0] - image.shape[-2]), value=value)


AutoImageProcessor.register(
    SpectralMoEConfig,
    image_processor_classes={"torchvision": SpectralMoEImageProcessor, "pil": SpectralMoEImageProcessor},
    exist_ok=True,
)
# Saved processors carry an auto_map and this file, so `AutoImageProcessor` / `pipeline` load them in any process.
SpectralMoEImageProcessor.register_for_auto_class("AutoImageProcessor")

__all__ = ["SpectralMoEImageProcessor"]
