"""Train SpectralMoE on a source domain and evaluate it on every target domain.

    accelerate launch -q -m modeling_spectralmoe.trainer.train --config PRESET [--key value ...]
    spectralmoe-train --config PRESET [--key value ...]          # one process, no accelerate config needed

A wrong setting, a missing path, a locked output folder or a full disk ends the run with one line `error: ...`; under
`accelerate launch`, its `-q` keeps that line the last one printed (without it, accelerate adds the traceback of the
failed subprocess).

PRESET is a YAML file or the name of a preset shipped with the package (`demo`, `flair`, `loveda`, ...). Any field of
the run configuration (see `modeling_spectralmoe.trainer.run_config.RunConfig`) can be overridden, nested ones with
dots: `--model.num_experts 3 --augmentation.crop_size 256 --resume_from_checkpoint latest`. Every setting is checked
before training starts.
"""

import argparse
import logging

from .run_config import load_run_config
from .trainer import Trainer


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML preset: a file, or the name of a packaged preset (e.g. demo)")
    args, overrides = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        Trainer(load_run_config(args.config, overrides)).train()
    except (ValueError, OSError) as error:  # a setting, a path or the disk is wrong: say which, no traceback
        parser.exit(2, f"error: {error}\n")


if __name__ == "__main__":
    main()
