"""`spectralmoe-train` for checkout users: `accelerate launch training/train.py --config demo` (the same as
`accelerate launch -m modeling_spectralmoe.trainer.train ...`)."""

from modeling_spectralmoe.trainer.train import main


if __name__ == "__main__":
    main()
