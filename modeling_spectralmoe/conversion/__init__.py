"""Converters of foreign checkpoint formats (the authors' mmseg release, Meta's ViT layouts, mmdet's Mask2Former).

Not part of a saved model folder: these run once, on the user's machine, to turn published files into a folder that
`from_pretrained` loads.
"""
