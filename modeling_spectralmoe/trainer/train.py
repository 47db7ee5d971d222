"""Train SpectralMoE on a source domain and evaluate it on every target domain.

    accelerate launch -m modeling_spectralmoe.trainer.train --config PRESET [--key value ...]
    spectralmoe-train --config PRESET [--key value ...]          # one process, no accelerate config needed

PRESET is a YAML file or the name of a preset shipped with the package (`demo`, `flair`, `loveda`, ...). Any field of
the run configuration (see `modeling_spectralmoe.trainer.run_config.RunConfig`) can be overridden, nested ones with
dots: `--model.num_experts 3 --augmentation.crop_size 256 --resume_from_checkpoint latest`. Every setting is checked
before training starts.
"""

import argparse
import logging

from .run_config import load_run_config
from .trainer import Trainer


class _WithoutCheckpointRotationNotices(logging.Filter):
    """accelerate warns each time it deletes the oldest checkpoint, which `checkpoints_total_limit` asks for."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "checkpoints to make room" not in record.getMessage()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML preset: a file, or the name of a packaged preset (e.g. demo)")
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
