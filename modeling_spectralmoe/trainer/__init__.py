"""Training of SpectralMoE on accelerate: validated run settings, the optimizer recipe, the training loop with
checkpoints and model selection, router diagnostics, figures, the model card and the `spectralmoe-train` command."""
