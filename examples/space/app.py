"""A Space for a SpectralMoE model: upload a GeoTIFF or PNG with the model's bands, see the class map over the image,
the confidence map, the legend and the expert routing of one layer. The Hub's widget never runs custom code; this is
where to try the model instead.

    python app.py --model FOLDER_OR_HUB_ID [--port 7860]

On a Space, set the variable `SPECTRALMOE_MODEL` to the model's Hub id (and a secret `HF_TOKEN` for gated encoders).
Scenes go through `predict_raster`, the engine of `spectralmoe-predict`; the pictures are drawn by
`modeling_spectralmoe.inference.scene_views`.
"""

import argparse
import os

import gradio as gr

from modeling_spectralmoe.inference import scene_views
from modeling_spectralmoe.inference.predict import load_model


MODEL_ENV = "SPECTRALMOE_MODEL"
PICTURE_HEIGHT = 320  # on screen; the served pictures keep the scene's size


def picture(label: str, elem_id: str) -> gr.Image:
    """An output picture, served as PNG (lossless) at the scene's size."""
    return gr.Image(label=label, format="png", height=PICTURE_HEIGHT, interactive=False, elem_id=elem_id)


def build_app(model_name: str) -> gr.Blocks:
    """The Space's page, with the model loaded once."""
    model, processor = load_model(model_name)

    def segment(path):
        if path is None:
            raise gr.Error("Upload a GeoTIFF or PNG.")
        try:
            prediction = scene_views.predict_scene(model, processor, path)
        except (ValueError, OSError) as error:  # bands that do not fit the model, a file GDAL cannot read: say so
            raise gr.Error(str(error)) from None
        bands = prediction.expert_bands
        experts = scene_views.expert_map_image(prediction, bands[0]) if bands else None
        return (
            prediction, scene_views.overlay_image(prediction), scene_views.class_map_image(prediction),
            scene_views.legend_html(prediction.class_names), scene_views.confidence_image(prediction),
            gr.Dropdown(choices=bands, value=bands[0] if bands else None, visible=bool(bands)), experts,
            scene_views.legend_html([f"expert {index}" for index in range(prediction.num_experts)], "expert"),
        )

    def show_experts(prediction, band):
        return scene_views.expert_map_image(prediction, band) if prediction is not None and band else None

    with gr.Blocks(title=f"SpectralMoE: {model_name}") as app:
        gr.Markdown(f"# SpectralMoE segmentation\nModel `{model_name}`: {model.config.num_channels} bands "
                    f"{model.config.band_names or ''}. Upload a GeoTIFF or PNG with these bands.")
        prediction = gr.State()
        upload = gr.File(label="GeoTIFF or PNG", file_types=[".tif", ".tiff", ".png"], type="filepath",
                         elem_id="upload")
        with gr.Row():
            overlay = picture("Classes over the image", "overlay")
            class_map = picture("Class map", "class-map")
        legend = gr.HTML(elem_id="legend")
        with gr.Row():
            confidence = picture("Confidence (violet 0 % to yellow 100 %)", "confidence")
            with gr.Column():
                layer = gr.Dropdown(label="Expert routing: layer and gate", choices=[], elem_id="expert-layer")
                experts = picture("Top-1 expert per token", "experts")
                expert_legend = gr.HTML(elem_id="expert-legend")
        upload.upload(segment, upload, [prediction, overlay, class_map, legend, confidence, layer, experts,
                                        expert_legend])
        layer.change(show_experts, [prediction, layer], experts)
    return app


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=os.environ.get(MODEL_ENV), help=f"folder or Hub id (default: ${MODEL_ENV})")
    parser.add_argument("--port", type=int, help="default: Gradio's (7860, or $GRADIO_SERVER_PORT)")
    args = parser.parse_args(argv)
    if not args.model:
        parser.error(f"name the model with --model or the {MODEL_ENV} variable")
    build_app(args.model).launch(server_port=args.port)


if __name__ == "__main__":
    main()
