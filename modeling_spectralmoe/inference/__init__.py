"""Inference over images larger than a window: the sliding-window engine shared by evaluation and scene prediction.

Not part of a saved model folder.
"""
