"""Inference over images larger than a window: the sliding-window engine shared by evaluation and scene prediction
(`windows`), and whole-scene prediction from rasters to georeferenced maps (`predict`, with `bands`, `raster`,
`outputs`; `ray_predict` for Ray clusters; `demo_scene` writes a scene to try it on), and serving it: `endpoint` answers
an Inference Endpoint's JSON requests (`export_endpoint` writes the handler that calls it into a saved folder),
`scene_views` draws the pictures of the Space in examples/space. Rasterio is needed by `raster`, `demo_scene` and
`endpoint` only, and imported when they are called or imported.

Not part of a saved model folder.
"""
