"""ray_cluster.yaml: checked offline by Ray's own cluster-launcher validation, plus what peft-search needs of it."""

import copy
import re
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER_YAML = Path(__file__).resolve().parents[1] / "ray_cluster.yaml"


def _raw() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def _validated(raw: dict) -> dict:
    """What `ray up` does before it contacts AWS (commands._bootstrap_config): prepare_config (defaults,
    setup-command merge, per-type worker bounds), then validate_config (JSON schema and cross-field checks)."""
    config = prepare_config(copy.deepcopy(raw))
    validate_config(config)
    return config


def test_cluster_yaml_passes_ray_validation_and_fits_peft_search():
    """Valid for Ray; CPU head, 1-GPU workers, project installed everywhere, token auth on every start."""
    raw = _raw()
    config = _validated(raw)
    assert config["provider"]["type"] == "aws" and config["provider"]["region"] == "us-west-2"

    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    (worker_name,) = [name for name in types if name != config["head_node_type"]]
    worker = types[worker_name]
    assert head["resources"].get("GPU", 0) == 0 and head["max_workers"] == 0
    assert worker["resources"]["GPU"] == 1
    assert worker["min_workers"] == 0 and worker["max_workers"] == config["max_workers"] == 4

    # the project is mounted and installed on the head and on the workers (prepared = common + own commands)
    assert config["file_mounts"]["~/peft-search"] == "."
    for commands in (config["head_setup_commands"], config["worker_setup_commands"]):
        assert any("pip install" in c and "-e ~/peft-search" in c for c in commands)
        assert any(f"ray[default,tune]=={ray.__version__}" in c for c in commands)  # same Ray as here
    # CPU torch on the head only; the workers keep PyPI's CUDA build
    assert any("download.pytorch.org/whl/cpu" in c for c in config["head_setup_commands"])
    assert not any("download.pytorch.org/whl/cpu" in c for c in config["worker_setup_commands"])
    # the user's setup lists replaced Ray's defaults (no stray default commands)
    assert config["head_setup_commands"] == raw["setup_commands"] + raw["head_setup_commands"]

    # token auth on every start command, with the token file that file_mounts distributes
    start = config["head_start_ray_commands"] + config["worker_start_ray_commands"]
    for command in start:
        assert "RAY_AUTH_MODE=token" in command, command
        (token_path,) = re.findall(r"RAY_AUTH_TOKEN_PATH=([^\s;]+)", command)
        assert token_path.replace("$HOME", "~") in config["file_mounts"], command
    head_start = " ".join(config["head_start_ray_commands"])
    for flag in ("--head", "--port=6379", "--dashboard-host=127.0.0.1",
                 "--autoscaling-config=~/ray_bootstrap_config.yaml"):
        assert flag in head_start
    assert "ray start --address=$RAY_HEAD_IP:6379" in " ".join(config["worker_start_ray_commands"])


def _unknown_top_level_key(c):
    c["max_worker"] = 4


def _max_workers_as_string(c):
    c["max_workers"] = "4"


def _gpu_count_as_string(c):
    c["available_node_types"]["gpu_worker"]["resources"]["GPU"] = "1"


def _head_type_not_declared(c):
    c["head_node_type"] = "no_such_type"


@pytest.mark.parametrize(
    "break_it, error, match",
    [
        (_unknown_top_level_key, jsonschema.ValidationError, "'max_worker' was unexpected"),
        (_max_workers_as_string, jsonschema.ValidationError, "'4' is not of type 'integer'"),
        (_gpu_count_as_string, jsonschema.ValidationError, "'1' is not of type 'integer'"),
        (_head_type_not_declared, ValueError, "head_node_type"),
    ],
)
def test_broken_copies_are_rejected(break_it, error, match):
    """The same validation rejects a broken copy of the file, so the test above can fail."""
    raw = _raw()
    break_it(raw)
    with pytest.raises(error, match=match):
        _validated(raw)
