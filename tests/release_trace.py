"""Every stage of a converted release's forward pass, named as in `golden/official_model_reference.safetensors`.

Imports nothing from the package, so it also runs in a fresh process on a folder loaded as remote code:
`python tests/release_trace.py FOLDER GOLDEN.safetensors OUT.safetensors`.
"""

import sys

import torch


def trace(model, pixel_values: torch.Tensor, prefix: str) -> dict[str, torch.Tensor]:
    """Runs `model` on `pixel_values` and records its stages (hooks on the visual layers, the adapter and the head)."""
    record, calls, handles = {}, [], []
    encoder = model.visual_encoder
    for index, layer in enumerate(encoder.layers):
        handles.append(layer.register_forward_hook(
            lambda module, args, output, i=index: record.__setitem__(f"{prefix}layer{i}.visual_block", output)
        ))
    handles.append(model.adapter.register_forward_hook(lambda module, args, output: calls.append(output)))
    handles.append(model.decode_head.register_forward_hook(
        lambda module, args, output: record.update(head_inputs=args, head_outputs=output)
    ))
    rgb = pixel_values[:, model.config.depth_rgb_bands]
    with torch.no_grad():
        record[f"{prefix}visual_embeddings"] = encoder.embed(pixel_values)[0]
        record[f"{prefix}depth_embeddings"] = model.depth_encoder.embed(rgb)
        depth = model.depth_encoder(rgb)
        outputs = model(pixel_values=pixel_values, output_router_probs=True)
    for handle in handles:
        handle.remove()
    for index, (call, visual_gates, depth_gates) in enumerate(
        zip(calls, outputs.visual_router_probs, outputs.depth_router_probs)
    ):
        record[f"{prefix}layer{index}.depth"] = depth[index]
        visual_prefix = record[f"{prefix}layer{index}.visual_block"][:, : encoder.num_prefix_tokens]
        record[f"{prefix}layer{index}.visual_adapted"] = torch.cat([visual_prefix, call.hidden_states], dim=1)
        record[f"{prefix}layer{index}.aux_loss"] = call.aux_loss.reshape(1)
        record[f"{prefix}layer{index}.visual_expert"] = visual_gates.argmax(-1).flatten().float()
        record[f"{prefix}layer{index}.depth_expert"] = depth_gates.argmax(-1).flatten().float()
    features, query_embed = record.pop("head_inputs")
    head = record.pop("head_outputs")
    record.update({f"{prefix}feature{i}": feature for i, feature in enumerate(features)})
    stages = [*head.auxiliary_logits, head]
    for i, stage in enumerate(stages):
        record[f"{prefix}class_logits{i}"] = stage["class_queries_logits"]
        record[f"{prefix}mask_logits{i}"] = stage["masks_queries_logits"]
    record[f"{prefix}seg_logits"] = outputs.logits
    record[f"{prefix}aux_loss"] = outputs.aux_loss.reshape(1)
    record[f"{prefix}query_embed"] = query_embed
    return {key: value.detach().contiguous() for key, value in record.items()}


def trace_golden_inputs(model, golden: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Stages for both inputs of the golden file (`output.*` and `alt.output.*`)."""
    model.eval()
    return {
        **trace(model, golden["input.pixel_values"], "output."),
        **trace(model, golden["alt.input.pixel_values"], "alt.output."),
    }


if __name__ == "__main__":
    from safetensors.torch import load_file, save_file
    from transformers import AutoModelForSemanticSegmentation

    folder, golden_path, output_path = sys.argv[1:]
    loaded = AutoModelForSemanticSegmentation.from_pretrained(folder, trust_remote_code=True)
    assert not any(name.startswith("modeling_spectralmoe") for name in sys.modules), "the package was imported"
    save_file(trace_golden_inputs(loaded, load_file(golden_path)), output_path)
