"""Where the project keeps what it builds, the small real data it carries, and the optional shared data."""

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
TINY_MODELS_DIR = Path(os.environ.get("AUDIO_RECIPES_TINY_MODELS", PROJECT_ROOT / "tiny-models"))
DATA_DIR = Path(os.environ.get("AUDIO_RECIPES_DATA", PROJECT_ROOT / "data"))
# Real data the repository carries (licences in assets/README.md): all the tiny recipes and the demo need
ASSETS_DIR = PROJECT_ROOT / "assets"
# Optional: more real data beside the clone (full SLURP annotations, MMAR/MMAU metadata, ...) for extra tests
SHARED_DATA_DIR = Path(os.environ.get("AUDIO_RECIPES_SHARED_DATA", PROJECT_ROOT.parent / "shared" / "data"))
