"""Synthetic land-cover scenes for the offline demo: a source sensor and target domains that differ by band response,
illumination and season, as in the cross-sensor / cross-regional settings of SpectralMoE.

Each scene is a smooth random partition into land-cover classes; each class has a spectral signature (reflectance in
the NIR, R, G, B bands) with per-region and per-pixel variation; a sensor model turns reflectance into 8-bit digital
numbers. Everything is seeded, so the demo is reproducible.
"""

from dataclasses import dataclass, field

import numpy as np
from scipy.ndimage import gaussian_filter


CLASS_NAMES = ["water", "vegetation", "built-up", "bare soil"]
BAND_NAMES = ["NIR", "R", "G", "B"]
WAVELENGTHS_UM = [0.83, 0.665, 0.56, 0.49]

# Summer reflectance (NIR, R, G, B) of each class.
SIGNATURES = np.array([
    [0.03, 0.05, 0.08, 0.10],  # water: dark, bluish, no NIR
    [0.45, 0.05, 0.10, 0.04],  # vegetation: red edge, strong NIR
    [0.25, 0.22, 0.21, 0.20],  # built-up: flat, bright
    [0.35, 0.30, 0.22, 0.15],  # bare soil: rising towards red
])


@dataclass
class SensorDomain:
    """How one domain renders reflectance.

    Args:
        name: split name.
        band_mixing: (4, 4) spectral response: digital band i sees `mixing[i] @ reflectance`.
        gain: per-band radiometric gain (digital numbers per unit reflectance).
        offset: per-band additive offset (haze, dark current), in reflectance.
        illumination: scene brightness factor.
        season_shift: (classes, 4) change of the class signatures (e.g. winter vegetation).
        noise: per-pixel multiplicative noise level.
    """

    name: str
    band_mixing: np.ndarray = field(default_factory=lambda: np.eye(4))
    gain: np.ndarray = field(default_factory=lambda: np.full(4, 400.0))
    offset: np.ndarray = field(default_factory=lambda: np.zeros(4))
    illumination: float = 1.0
    season_shift: np.ndarray = field(default_factory=lambda: np.zeros((4, 4)))
    noise: float = 0.06


def demo_domains() -> dict[str, SensorDomain]:
    """The source sensor (also its validation split) and two unseen target domains."""
    winter = np.zeros((4, 4))
    winter[1] = [-0.22, 0.07, 0.02, 0.03]  # dormant vegetation: NIR collapses, turns brown
    winter[3] = [0.05, 0.05, 0.05, 0.05]  # frost-bright soil
    return {
        "source": SensorDomain("source"),
        "target_other_sensor": SensorDomain(
            "target_other_sensor",
            band_mixing=np.array([[0.8, 0.2, 0, 0], [0.1, 0.75, 0.15, 0], [0, 0.15, 0.7, 0.15], [0, 0, 0.25, 0.75]]),
            gain=np.array([330.0, 450.0, 420.0, 380.0]),
            offset=np.array([0.0, 0.01, 0.02, 0.04]),
            noise=0.09,
        ),
        "target_winter": SensorDomain("target_winter", illumination=0.7, offset=np.array([0, 0.02, 0.03, 0.06]),
                                      season_shift=winter),
    }


def random_layout(size: int, rng: np.random.Generator, smoothness: float = 9.0) -> np.ndarray:
    """(size, size) class map: argmax of smoothed random fields, giving blob-shaped regions of every class."""
    fields = rng.standard_normal((len(CLASS_NAMES), size, size))
    fields = np.stack([gaussian_filter(f, smoothness, mode="wrap") for f in fields])
    fields /= fields.std(axis=(1, 2), keepdims=True)
    fields += rng.normal(0, 0.3, size=(len(CLASS_NAMES), 1, 1))  # vary class frequencies between scenes
    return fields.argmax(0).astype(np.uint8)


def render(label: np.ndarray, domain: SensorDomain, rng: np.random.Generator) -> np.ndarray:
    """(4, H, W) uint8 digital numbers of a class map as seen by a sensor domain."""
    signatures = SIGNATURES + domain.season_shift
    reflectance = signatures[label].transpose(2, 0, 1)  # (4, H, W)
    region_variation = gaussian_filter(rng.normal(1.0, 0.15, size=label.shape), 4)
    pixel_noise = rng.normal(1.0, domain.noise, size=reflectance.shape)
    reflectance = reflectance * region_variation * pixel_noise * domain.illumination
    mixed = np.einsum("ij,jhw->ihw", domain.band_mixing, reflectance) + domain.offset[:, None, None]
    return np.clip(mixed * domain.gain[:, None, None], 0, 255).astype(np.uint8)


def scenes(domain: SensorDomain, count: int, size: int, seed: int):
    """Yields `count` (image (4, H, W) uint8, label (H, W) uint8, image_id) scenes of a domain."""
    rng = np.random.default_rng(seed)
    for index in range(count):
        label = random_layout(size, rng)
        yield render(label, domain, rng), label, f"{domain.name}_{index:04d}"
