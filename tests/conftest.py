import pytest

from audio_recipes.library_noise import KNOWN_HARMLESS_WARNINGS
from audio_recipes.paths import SHARED_DATA_DIR


def pytest_configure(config):
    # pytest resets the warning filters for each test: the library's known-harmless ones again (one list)
    for message in KNOWN_HARMLESS_WARNINGS:
        config.addinivalue_line("filterwarnings", f"ignore:{message}:FutureWarning")


@pytest.fixture(scope="session")
def shared_data():
    """The real data beside the project (`../shared/data`); tests that need it skip without it."""
    if not SHARED_DATA_DIR.exists():
        pytest.skip(f"needs the shared real data at {SHARED_DATA_DIR} (absent on this machine)")
    return SHARED_DATA_DIR
