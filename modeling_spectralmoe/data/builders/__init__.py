"""Dataset builders: one command per benchmark release (`spectralmoe-build-<name>`, or
`python -m modeling_spectralmoe.data.builders.<name>`), users' own tiles (`folder`) and the synthetic demo (`demo`).
Shared steps are in `common`; default split files in `splits/`."""
