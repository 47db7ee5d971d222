"""Inference over images larger than a window: the sliding-window engine shared by evaluation and scene prediction
(`windows`), and whole-scene prediction from rasters to georeferenced maps (`predict`, with `bands`, `raster`,
`outputs`; `ray_predict` for Ray clusters; `demo_scene` writes a scene to try it on). Rasterio is needed by `raster`
and `demo_scene` only, and imported when they are called.

Not part of a saved model folder.
"""
