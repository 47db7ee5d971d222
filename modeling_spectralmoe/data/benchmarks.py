"""Facts about the paper's benchmarks (arXiv 2603.13352) shared by the dataset builders and the released-checkpoint converter."""

# Five-Billion-Pixels: 24 classes in label order (index i = annotation code i + 1), 4 bands NIR, R, G, B.
FIVE_BILLION_PIXELS_CLASSES = (
    "industrial area", "paddy field", "irrigated field", "dry cropland", "garden land", "arbor forest",
    "shrub forest", "park", "natural meadow", "artificial meadow", "river", "urban residential", "lake", "pond",
    "fish pond", "snow", "bare land", "rural residential", "stadium", "square", "road", "overpass",
    "railway station", "airport",
)
FIVE_BILLION_PIXELS_BANDS = ("NIR", "R", "G", "B")
FIVE_BILLION_PIXELS_WAVELENGTHS_UM = (0.83, 0.665, 0.56, 0.49)  # GF-2 band centres (DOFA)

# SpectralMoE's published scores (mIoU, mAcc; Table 2 of the paper), per benchmark: what a converted release's card
# quotes (with the paper as source) for the benchmark the release was trained for.
PAPER_URL = "https://arxiv.org/abs/2603.13352"
PAPER_TABLE = "SpectralMoE (Chen et al., CVPR 2026), Table 2"
PAPER_RESULTS = {
    "whu_ohs": ("WHU-OHS", 59.83, 73.13),
    "fbp_cross_sensor": ("Five-Billion-Pixels cross-sensor", 66.19, 77.25),
    "fbp_cross_regional": ("Five-Billion-Pixels cross-regional", 60.32, 75.78),
    "flair": ("FLAIR", 63.18, 76.52),
    "loveda": ("LoveDA", 59.11, 75.38),
    "potsdam_to_vaihingen": ("Potsdam -> Vaihingen", 64.99, 85.43),
    "openearthmap": ("OpenEarthMap", 68.57, 80.17),
}
