import os
import sys
from pathlib import Path

# Nothing in the test suite may reach a hub; MLflow must not phone home.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")

sys.path.insert(0, str(Path(__file__).parent))


import pytest  # noqa: E402

from peft_space import dimension  # noqa: E402
from peft_space.dimensions import DIMENSIONS  # noqa: E402


@pytest.fixture
def scratch_registries(monkeypatch):
    """Registering is global; give a test that extends the space its own copy of the registries."""
    monkeypatch.setattr(DIMENSIONS, "dimensions", dict(DIMENSIONS.dimensions))
    form = dimension("form")
    monkeypatch.setattr(form, "_choices", dict(form._choices))


@pytest.fixture
def layers_dimension(scratch_registries):
    """The user's "layers" dimension of tests/extension_layers.py, registered in this test's registries."""
    import extension_layers  # a user's module: importing it registers the dimension (the first time)

    if "layers" not in DIMENSIONS.names():
        DIMENSIONS.register(extension_layers.LAYERS)
    return extension_layers.LAYERS
