"""Evaluate a saved SpectralMoE model on every target domain (and the source validation split) of a dataset.

    spectralmoe-evaluate --model OUTPUT/final_model --dataset DATASET [--mode slide] [--output results.json]
    torchrun --nproc_per_node 2 -m modeling_spectralmoe.evaluation.evaluate ...

Under torchrun the images are split across the processes; the results equal those of one process.
"""

import argparse
from pathlib import Path

import torch.distributed as dist

from ..data.schema import load_spectral_dataset
from ..image_processing_spectralmoe import SpectralMoEImageProcessor
from ..modeling_spectralmoe import SpectralMoEForSemanticSegmentation
from .protocol import (
    EVALUATION_MODES, EvaluationConfig, check_dataset_matches_model, evaluate_dataset, format_table, results_json,
)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="folder or Hub id written by spectralmoe-train")
    parser.add_argument("--dataset", required=True, help="dataset folder or Hub id in the package's schema")
    parser.add_argument("--mode", default="whole", choices=EVALUATION_MODES,
                        help="whole images, or sliding windows for large tiles (default: whole)")
    parser.add_argument("--crop", type=int, default=512, help="sliding-window side in pixels (default: 512)")
    parser.add_argument("--stride", type=int, default=341, help="sliding-window step in pixels (default: 341)")
    parser.add_argument("--batch_size", type=int, default=1, help="images per batch (default: 1)")
    parser.add_argument("--output", help="write the results as JSON here")
    args = parser.parse_args(argv)
    if args.mode == "slide" and (args.crop % 16 or args.stride < 1):
        parser.error(f"--crop must be a multiple of the patch size 16 and --stride positive, found {args.crop}, "
                     f"{args.stride}")
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)  # fail before, not after, a long evaluation

    distributed = dist.is_torchelastic_launched()
    if distributed:
        dist.init_process_group("gloo")
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    model = SpectralMoEForSemanticSegmentation.from_pretrained(args.model)
    processor = SpectralMoEImageProcessor.from_pretrained(args.model)
    dataset, metadata = load_spectral_dataset(args.dataset)
    for warning in check_dataset_matches_model(model.config, metadata):
        print(f"warning: {warning}")
    if not [split for split in dataset if split != metadata.source_split]:
        raise SystemExit(f"error: {args.dataset} has no validation or target split to evaluate.")
    config = EvaluationConfig(mode=args.mode, crop=args.crop, stride=args.stride, batch_size=args.batch_size)
    results = evaluate_dataset(model, processor, dataset, metadata.source_split, config, rank, world,
                               metadata=metadata)
    if rank == 0:
        print(format_table(results, f"{args.model} on {args.dataset}"))
        if args.output:
            Path(args.output).write_text(results_json(results))
    if distributed:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
