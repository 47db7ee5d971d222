"""Make a saved model folder deployable as a Hugging Face Inference Endpoint:

    spectralmoe-export-endpoint FOLDER [--package REQUIREMENT] [--overwrite]

writes `handler.py` (an `EndpointHandler` calling this package's scene engine, see `endpoint`) and `requirements.txt`
(this package at this version, and rasterio), which the Endpoint installs at start-up. `save_pretrained` never writes
them: a saved folder's Python files are exactly the model's remote code. spectralmoe is not on PyPI: pass `--package`
with where the Endpoint can install it from (`"spectralmoe @ https://.../spectralmoe-0.1.0-py3-none-any.whl"`, a
git URL, or a private index's name).
"""

import argparse
import importlib.metadata
import sys
from pathlib import Path


HANDLER_TEMPLATE = Path(__file__).with_name("endpoint_handler.py")
RUNTIME_REQUIREMENTS = ("rasterio>=1.3",)


def endpoint_files(package: str | None = None) -> dict[str, str]:
    """File name -> text of what an Endpoint needs beside the model's own files."""
    if package is None:
        try:
            package = f"spectralmoe=={importlib.metadata.version('spectralmoe')}"
        except importlib.metadata.PackageNotFoundError:
            raise ValueError("spectralmoe is not installed (a checkout on PYTHONPATH?): say where the Endpoint "
                             "installs it from with `package`/--package.") from None
    return {"handler.py": HANDLER_TEMPLATE.read_text(), "requirements.txt": "\n".join([package, *RUNTIME_REQUIREMENTS])
            + "\n"}


def export_endpoint(folder, package: str | None = None, overwrite: bool = False) -> list[Path]:
    """Writes `handler.py` and `requirements.txt` into a saved model folder; returns their paths.

    Args:
        folder: a folder written by `save_pretrained` (with `config.json`).
        package (`str`, *optional*): the requirement that installs spectralmoe; default this version from an index.
        overwrite (`bool`, defaults to `False`): replace a `handler.py` or `requirements.txt` that differs.
    """
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} is not a saved model folder: it has no config.json.")
    files = endpoint_files(package)
    for name, text in files.items():
        path = folder / name
        if path.is_file() and path.read_text() != text and not overwrite:
            raise FileExistsError(f"{path} exists with other content; pass overwrite=True (--overwrite) to replace "
                                  "it.")
    for name, text in files.items():
        (folder / name).write_text(text)
    return [folder / name for name in files]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", help="saved model folder")
    parser.add_argument("--package", help="requirement that installs spectralmoe (default: spectralmoe==VERSION)")
    parser.add_argument("--overwrite", action="store_true", help="replace differing handler.py / requirements.txt")
    args = parser.parse_args(argv)
    try:
        paths = export_endpoint(args.folder, args.package, args.overwrite)
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        sys.exit(f"error: {error}")
    print(f"Wrote {', '.join(str(path) for path in paths)}")


if __name__ == "__main__":
    main()


__all__ = ["endpoint_files", "export_endpoint"]
