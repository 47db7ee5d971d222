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
