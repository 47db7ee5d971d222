"""Inference Endpoint handler of a SpectralMoE model, written into the model's folder by `spectralmoe-export-endpoint`
(with the `requirements.txt` that installs the package). It only hands requests to the installed package: the request
and response formats are those of `modeling_spectralmoe.inference.endpoint`.
"""

from typing import Any

from modeling_spectralmoe.inference.endpoint import SceneEndpoint


class EndpointHandler:
    """What Hugging Face Inference Endpoints call: built once with the repository's folder, then once per request."""

    def __init__(self, path: str = ""):
        self.endpoint = SceneEndpoint(path or ".")

    def __call__(self, data: dict[str, Any]) -> dict:
        return self.endpoint(data)
