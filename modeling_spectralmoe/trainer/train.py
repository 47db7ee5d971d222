"""Train SpectralMoE on a source domain and evaluate it on every target domain.

    accelerate launch training/train.py --config configuration/<preset>.yaml [--key value ...]

Any field of the run configuration (see `modeling_spectralmoe.training_utils.run_config.RunConfig`) can be overridden,
nested ones with dots: `--model.num_experts 3 --augmentation.crop_size 256 --resume_from_checkpoint latest`.
"""

import argparse
import logging

from modeling_spectralmoe.training_utils.run_config import load_run_config
from modeling_spectralmoe.training_utils.trainer import Trainer


class _WithoutCheckpointRotationNotices(logging.Filter):
    """accelerate warns each time it deletes the oldest checkpoint, which `checkpoints_total_limit` asks for."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "checkpoints to make room" not in record.getMessage()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML preset from configuration/")
    args, overrides = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("accelerate.accelerator").addFilter(_WithoutCheckpointRotationNotices())
    try:
        trainer = Trainer(load_run_config(args.config, overrides))
    except (ValueError, FileNotFoundError) as error:  # a setting or a path is wrong: say which, no traceback
        parser.exit(2, f"error: {error}\n")
    trainer.train()


if __name__ == "__main__":
    main()
