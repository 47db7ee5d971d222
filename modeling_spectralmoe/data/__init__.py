"""Data of SpectralMoE that never goes into a saved model folder: the dataset schema, the benchmarks' facts, training
augmentations and loaders, and (in `builders`) the commands that turn each benchmark's release into a dataset."""
