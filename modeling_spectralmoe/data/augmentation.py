"""Training augmentations of SpectralMoE (the paper's training pipeline, arXiv 2603.13352, implementation details) as
torch ops on C-band tensors in raw units (before normalisation).

Random resize of the short side, random crop with a cap on the dominant class (`cat_max_ratio`), horizontal flip and
mmseg's photometric distortion restricted to the bands the metadata names R, G and B, scaled to the data's value range
(`resolve_value_range`: 255 for 8-bit data, else from the source statistics). Pixels without a measurement
(no-data, and the padding added here) are NaN in the image, so every step carries them along; the image processor
turns them into 0 after normalisation and ignores their labels.
"""

from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from .schema import IGNORE_INDEX


@dataclass
class AugmentationConfig:
    """Settings of the training augmentations.

    Args:
        crop_size: side of the square training crop (512 in the paper).
        scale_range: short side is resized to `crop_size x U(low, high)` (0.5-2.0 RGB, 0.6-1.2 multispectral);
            `None` keeps the size (WHU-OHS).
        cat_max_ratio: a crop is redrawn (up to 10 times) while one class covers more than this share of its labelled
            pixels.
        flip_prob: probability of a horizontal flip.
        photometric: apply brightness, contrast, saturation and hue jitter to the R, G, B bands.
        rgb_bands: indices of R, G, B in the input (from the band names); `None` disables photometric jitter.
        brightness_delta: brightness shift bound in 1/255 of `value_range` (32: mmseg's ±32 on 8-bit data).
        value_range: raw value of full brightness: jittered R, G, B values are clipped to [0, value_range] and the
            brightness shift and hue/saturation maths scale with it. `None` (default) follows the data
            (`resolve_value_range`): 255 for uint8, otherwise the largest mean + 3 std of the R, G, B bands.
    """

    crop_size: int = 512
    scale_range: tuple[float, float] | None = (0.5, 2.0)
    cat_max_ratio: float = 0.75
    flip_prob: float = 0.5
    photometric: bool = True
    rgb_bands: list[int] | None = None
    brightness_delta: float = 32.0
    value_range: float | None = None


STATISTICS_RANGE_STDS = 3  # mean + 3 std: about the 99.9th percentile of a band


def resolve_value_range(config: AugmentationConfig, dtype: str, mean: list[float], std: list[float]
                        ) -> AugmentationConfig:
    """`config` with the value range of the data: 255 for uint8 data, else from the R, G, B bands' raw statistics.
    A range set by hand that most R, G, B values exceed (e.g. 255 on uint16 data) would clip the training inputs
    (evaluation inputs are never clipped): refused."""
    if not config.photometric or config.rgb_bands is None:
        return config
    rgb_mean, rgb_std = np.asarray(mean)[config.rgb_bands], np.asarray(std)[config.rgb_bands]
    if config.value_range is None:
        derived = 255.0 if np.dtype(dtype) == np.uint8 else float((rgb_mean + STATISTICS_RANGE_STDS * rgb_std).max())
        return replace(config, value_range=derived)
    if (rgb_mean + rgb_std).max() > config.value_range:
        raise ValueError(
            f"`augmentation.value_range` is {config.value_range:g}, but the R, G, B bands ({dtype} data) have mean + "
            f"std up to {(rgb_mean + rgb_std).max():.6g}: the photometric jitter would clip most training pixels. "
            "Leave `value_range` unset (null) to follow the data, or set the sensor's range."
        )
    return config


def random_resize(image: torch.Tensor, label: torch.Tensor, crop_size: int, scale_range, generator) -> tuple:
    """Resizes (C, H, W) image bilinearly and (H, W) label by nearest so the short side is crop_size x U(range)."""
    low, high = scale_range
    ratio = low + (high - low) * torch.rand((), generator=generator).item()
    scale = crop_size * ratio / min(image.shape[-2:])
    size = (max(1, round(image.shape[-2] * scale)), max(1, round(image.shape[-1] * scale)))
    image = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]
    label = F.interpolate(label[None, None].float(), size=size, mode="nearest")[0, 0].to(label.dtype)
    return image, label


def pad_to(image: torch.Tensor, label: torch.Tensor, size: int) -> tuple:
    """Pads bottom/right to at least size x size: image with NaN (no measurement), label with the ignore index."""
    pad_h, pad_w = max(0, size - image.shape[-2]), max(0, size - image.shape[-1])
    if pad_h or pad_w:
        image = F.pad(image, (0, pad_w, 0, pad_h), value=float("nan"))
        label = F.pad(label, (0, pad_w, 0, pad_h), value=IGNORE_INDEX)
    return image, label


def random_crop(image, label, size: int, cat_max_ratio: float, generator, attempts: int = 11) -> tuple:
    """Crop of size x size, redrawn while one class dominates its labelled pixels (mmseg's cat_max_ratio: a first
    crop and up to 10 redraws, the last one kept whatever its balance)."""
    image, label = pad_to(image, label, size)
    height, width = label.shape
    for _ in range(attempts):
        top = torch.randint(0, height - size + 1, (), generator=generator).item()
        left = torch.randint(0, width - size + 1, (), generator=generator).item()
        crop_label = label[top : top + size, left : left + size]
        counts = torch.bincount(crop_label[crop_label != IGNORE_INDEX].long().flatten())
        if cat_max_ratio >= 1.0 or (counts > 0).sum() > 1 and counts.max() / counts.sum() < cat_max_ratio:
            break
    return image[:, top : top + size, left : left + size], crop_label


def rgb_to_hsv(rgb: torch.Tensor) -> torch.Tensor:
    """(3, H, W) RGB in [0, 1] -> HSV with hue in [0, 1)."""
    maximum, argmax = rgb.max(0)
    minimum = rgb.min(0).values
    chroma = maximum - minimum
    safe_chroma = chroma.clamp_min(1e-12)
    red, green, blue = rgb
    hue = torch.where(
        argmax == 0, ((green - blue) / safe_chroma) % 6,
        torch.where(argmax == 1, (blue - red) / safe_chroma + 2, (red - green) / safe_chroma + 4),
    )
    hue = torch.where(chroma > 0, hue / 6, torch.zeros_like(hue)) % 1.0
    saturation = torch.where(maximum > 0, chroma / maximum.clamp_min(1e-12), torch.zeros_like(maximum))
    return torch.stack([hue, saturation, maximum])


def hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """Inverse of `rgb_to_hsv`."""
    hue, saturation, value = hsv
    offsets = torch.tensor([5.0, 3.0, 1.0], device=hsv.device).view(3, 1, 1)
    k = (offsets + hue * 6) % 6
    return value - value * saturation * torch.clamp(torch.minimum(k, 4 - k), 0, 1)


def photometric_distortion(image: torch.Tensor, config: AugmentationConfig, generator) -> torch.Tensor:
    """mmseg's PhotoMetricDistortion on the R, G, B bands only, each step with probability 0.5: brightness shift,
    contrast scale (before or after the colour steps), saturation scale, hue shift (±18 of OpenCV's 180-step hue)."""
    if not config.photometric or config.rgb_bands is None:
        return image

    def coin() -> bool:
        return torch.rand((), generator=generator).item() < 0.5

    def uniform(low: float, high: float) -> float:
        return low + (high - low) * torch.rand((), generator=generator).item()

    if config.value_range is None:
        raise ValueError("`value_range` is unset: call `resolve_value_range` with the data's dtype and statistics.")
    top, delta = config.value_range, config.brightness_delta * config.value_range / 255
    rgb = image[config.rgb_bands]
    if coin():  # each step clips to the sensor's range, as mmseg's does
        rgb = (rgb + uniform(-delta, delta)).clamp(0, top)
    contrast_first = coin()
    contrast = uniform(0.5, 1.5) if coin() else None
    if contrast_first and contrast is not None:
        rgb = (rgb * contrast).clamp(0, top)
    hsv = rgb_to_hsv((rgb / top).clamp(0, 1))
    if coin():
        hsv[1] = (hsv[1] * uniform(0.5, 1.5)).clamp(0, 1)
    if coin():
        hsv[0] = (hsv[0] + uniform(-18, 18) / 180) % 1.0
    rgb = hsv_to_rgb(hsv) * top
    if not contrast_first and contrast is not None:
        rgb = rgb * contrast
    image = image.clone()
    image[config.rgb_bands] = rgb.clamp(0, top)
    return image


def augment(image: torch.Tensor, label: torch.Tensor, config: AugmentationConfig, generator: torch.Generator):
    """One training sample: (C, H, W) float image in raw units and (H, W) long label -> augmented crop."""
    if config.scale_range is not None:
        image, label = random_resize(image, label, config.crop_size, config.scale_range, generator)
    image, label = random_crop(image, label, config.crop_size, config.cat_max_ratio, generator)
    if torch.rand((), generator=generator).item() < config.flip_prob:
        image, label = image.flip(-1), label.flip(-1)
    return photometric_distortion(image, config, generator), label
