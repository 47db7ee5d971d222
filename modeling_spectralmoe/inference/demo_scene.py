"""Write a synthetic UTM scene for trying `spectralmoe-predict` on the demo model: the demo's land-cover generator and
source sensor (4 bands NIR, R, G, B, uint8) at any size, georeferenced in UTM zone 32N, with a no-data border shaped
like the edge of a tilted satellite swath (0 = no data).

    python -m modeling_spectralmoe.inference.demo_scene --output demo/scene.tif [--size 3000]
"""

import argparse

import numpy as np

from ..data.builders.demo_scenes import BAND_NAMES, WAVELENGTHS_UM, demo_domains, random_layout, render


UTM_32N = "EPSG:32632"
PIXEL_SIZE_M = 10.0


def swath_mask(height: int, width: int, tilt: float = 0.12, margin: float = 0.06) -> np.ndarray:
    """(H, W) bool: True inside a band of the image tilted by `tilt` (as a slope), no data outside it."""
    rows, columns = np.mgrid[0:height, 0:width]
    shifted = columns - tilt * rows
    return (shifted > margin * width) & (shifted < (1 - margin) * width - tilt * height)


def write_demo_scene(path: str, height: int = 3000, width: int = 3000, seed: int = 0) -> None:
    import rasterio
    from rasterio.transform import from_origin

    rng = np.random.default_rng(seed)
    label = random_layout(max(height, width), rng, smoothness=24.0)[:height, :width]
    image = np.maximum(render(label, demo_domains()["source"], rng), 1)  # 0 is reserved for no data
    image[:, ~swath_mask(height, width)] = 0
    profile = dict(driver="GTiff", height=height, width=width, count=len(BAND_NAMES), dtype="uint8", nodata=0,
                   crs=UTM_32N, transform=from_origin(600000.0, 5200000.0, PIXEL_SIZE_M, PIXEL_SIZE_M), tiled=True,
                   blockxsize=512, blockysize=512, compress="deflate")
    with rasterio.open(path, "w", **profile) as target:
        target.write(image)
        for index, (name, wavelength) in enumerate(zip(BAND_NAMES, WAVELENGTHS_UM), start=1):
            target.set_band_description(index, name)
            target.update_tags(index, ns="IMAGERY", CENTRAL_WAVELENGTH_UM=str(wavelength))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="demo/scene.tif")
    parser.add_argument("--size", type=int, default=3000, help="side in pixels")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    write_demo_scene(args.output, args.size, args.size, args.seed)
    print(f"Wrote a {args.size} x {args.size} UTM scene with a no-data border to {args.output}")


if __name__ == "__main__":
    main()
