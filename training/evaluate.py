"""`spectralmoe-evaluate` for checkout users: `python training/evaluate.py --model ... --dataset ...` (the same as
`python -m modeling_spectralmoe.evaluation.evaluate ...`)."""

from modeling_spectralmoe.evaluation.evaluate import main


if __name__ == "__main__":
    main()
