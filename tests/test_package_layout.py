"""The package's layout: its top level is exactly the remote code a saved model folder carries, everything else lives
in sub-packages (each with `__init__.py`, so a wheel ships it), importing the model needs neither `datasets` nor
`rasterio`, and nothing shipped cites the repository's internal notes or reference files."""

import configparser
import importlib
import re
import subprocess
import sys
from pathlib import Path

import modeling_spectralmoe
from modeling_spectralmoe import SpectralMoEForSemanticSegmentation, SpectralMoEImageProcessor

from .conftest import tiny_config


PACKAGE = Path(modeling_spectralmoe.__file__).resolve().parent
DATA_FOLDERS = {"presets", "splits"}  # YAML shipped as package data, no Python


def test_top_level_is_exactly_the_remote_code_of_a_saved_folder(tiny_encoders, tmp_path):
    model = SpectralMoEForSemanticSegmentation(tiny_config(*tiny_encoders))
    model.save_pretrained(tmp_path)
    SpectralMoEImageProcessor().save_pretrained(tmp_path)
    saved = {path.name for path in tmp_path.glob("*.py")}
    top_level = {path.name for path in PACKAGE.glob("*.py")} - {"__init__.py"}
    assert saved == top_level
    assert not [path.name for path in PACKAGE.iterdir() if path.is_file() and path.suffix != ".py"]


def test_every_folder_with_code_is_a_package():
    folders = {path.parent for path in PACKAGE.rglob("*.py")} | {path for path in PACKAGE.rglob("*") if path.is_dir()}
    skipped = DATA_FOLDERS | {"__pycache__"}
    folders = {folder for folder in folders if not skipped & set(folder.relative_to(PACKAGE).parts)}
    assert [str(folder) for folder in folders if not (folder / "__init__.py").is_file()] == []


def test_the_model_files_import_without_dataset_or_raster_libraries():
    script = (
        "import sys\n"
        "import modeling_spectralmoe.configuration_spectralmoe, modeling_spectralmoe.image_processing_spectralmoe\n"
        "import modeling_spectralmoe.modeling_spectralmoe\n"
        "print(sorted(name for name in ('datasets', 'rasterio') if name in sys.modules))\n"
    )
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout.strip() == "[]"


def test_shipped_files_cite_the_paper_not_internal_notes():
    """Docstrings and comments cite arXiv 2603.13352; the repository's SPEC.md / DESIGN.md and golden reference files
    are not part of an installed package."""
    internal = re.compile(r"\bSPEC\b|SPEC\.md|DESIGN\.md|golden/")
    shipped = [path for path in PACKAGE.rglob("*") if path.suffix in (".py", ".yaml", ".md")]
    citing = sorted(str(path.relative_to(PACKAGE)) for path in shipped if internal.search(path.read_text()))
    assert citing == []


def test_every_console_script_names_a_main():
    parser = configparser.ConfigParser()
    parser.read(Path(__file__).resolve().parents[1] / "setup.cfg")
    scripts = [line.split("=") for line in parser["options.entry_points"]["console_scripts"].split("\n") if line]
    assert len(scripts) >= 11
    for name, target in scripts:
        module, function = target.strip().split(":")
        assert callable(getattr(importlib.import_module(module), function)), name
