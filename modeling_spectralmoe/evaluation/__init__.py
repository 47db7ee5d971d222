"""Evaluation of SpectralMoE: the confusion-matrix metric (and its `evaluate.Metric` wrapper), the evaluation protocol
(whole or sliding-window inference, per-domain and pooled summaries, majority-class baseline) and the
`spectralmoe-evaluate` command."""
