import os
import secrets
import tempfile
from pathlib import Path

# Nothing in the test suite may reach a hub; MLflow must not phone home.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")

# Ray 2.60 authenticates nodes and drivers by token and reads the mode when it is imported: one token for the
# whole session, set before any test module imports ray.
_RAY_TOKEN = Path(tempfile.mkdtemp(prefix="peft-search-ray-")) / "auth_token"
_RAY_TOKEN.write_text(secrets.token_hex(32))
os.environ.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(_RAY_TOKEN), "RAY_USAGE_STATS_ENABLED": "0"})


import pytest  # noqa: E402

from peft_space import dimension, register_dimension  # noqa: E402
from peft_space.dimensions import DIMENSIONS  # noqa: E402


# Slow tests (a real Ray cluster, a browser, real training): `pytest -m "not slow"` is the inner loop; CI runs all.
SLOW_FIXTURES = {"cluster"}  # and every fixture built on it


def pytest_collection_modifyitems(items):
    for item in items:
        if SLOW_FIXTURES & set(item.fixturenames):
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def scratch_registries():
    """Registering is global; give a test that extends the space its own copy of the registries."""
    with DIMENSIONS.scratch(), dimension("form").registry.scratch():
        yield


@pytest.fixture
def layers_dimension(scratch_registries):
    """The user's "layers" dimension of tests/extension_layers.py, registered in this test's registries."""
    import extension_layers  # a user's module: importing it registers the dimension (the first time)

    if "layers" not in DIMENSIONS:
        register_dimension(extension_layers.LAYERS)
    return extension_layers.LAYERS


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    """One real two-node Ray cluster on 127.0.0.1 (a head and a worker, 1 CPU each), shared by every test
    that runs a search; nodes, this driver and the CLI drivers the tests start share the session's token."""
    from peft_search.testing import Cluster

    env = {"PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    cluster = Cluster(tmp_path_factory.mktemp("ray"), cpus=1, env=env)
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def ray_cluster(cluster):
    """The shared cluster's address (host:port), as a spec's ``ray_address`` takes it."""
    return cluster.address
