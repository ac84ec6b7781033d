"""cluster.yaml: Ray's own cluster-launcher validation accepts it, and it says what we rely on.

``ray up`` runs ``prepare_config`` (merge with the provider's defaults.yaml, merge the setup
commands, check Docker, fill each node type's min/max workers) and then ``validate_config``
(Ray's ray-schema.json through jsonschema, plus its own cross-field checks). Both are used
here as they are; the AWS-only steps (resource autodetection, bootstrap: IAM, key pair,
subnets) need an account and are not run. A guard makes any network connection fail.
"""

from __future__ import annotations

import copy
import re
import shlex
import socket
import tomllib
from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

REPO = Path(__file__).resolve().parents[2]
CLUSTER_YAML = REPO / "cluster.yaml"
AUTH_EXPORT = re.compile(r"(?:^|[;&|(]\s*)export\s+(?:\S+\s+)*RAY_AUTH_MODE=token(?:\s|;|$)")


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("validating cluster.yaml must not touch the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)


@pytest.fixture
def raw() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


@pytest.fixture
def prepared(raw) -> dict:
    config = prepare_config(copy.deepcopy(raw))
    validate_config(config)
    return config


def _start_commands(config: dict) -> list[str]:
    return config["head_start_ray_commands"] + config["worker_start_ray_commands"]


def _exported(command: str, name: str) -> str | None:
    """The value ``export ... NAME=value`` gives NAME in a command line, if it does."""
    for part in re.split(r"[;&|]+", command):
        words = shlex.split(part, posix=True)
        if words[:1] == ["export"]:
            for w in words[1:]:
                if w.startswith(name + "="):
                    return w.split("=", 1)[1]
    return None


def _pyproject_pins() -> dict[str, str]:
    """The x86_64 pins of pyproject.toml (what a GPU node installs), by distribution name."""
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = {}
    for dep in deps:
        requirement, _, marker = dep.partition(";")
        if marker and "x86_64" not in marker:
            continue
        name = re.match(r"[A-Za-z0-9_.-]+", requirement).group(0)
        pins[name] = requirement.strip()
    return pins


# ------------------------------------------------------------------ Ray's validation
def test_ray_validate_config_accepts_the_file_as_written(raw):
    validate_config(copy.deepcopy(raw))


def test_ray_prepare_config_then_validate_config_as_ray_up_does(raw, prepared):
    # prepare_config merged aws/defaults.yaml under ours: ours wins key by key...
    for key in (
        "cluster_name",
        "max_workers",
        "provider",
        "available_node_types",
        "head_node_type",
        "file_mounts",
        "docker",
    ):
        assert prepared[key] == raw[key], key
    # ...and put the common setup commands in front of each node kind's own.
    assert prepared["head_setup_commands"] == raw["setup_commands"] + raw["head_setup_commands"]
    assert prepared["worker_setup_commands"] == (
        raw["setup_commands"] + raw["worker_setup_commands"]
    )
    # the defaults' example setup (a nightly Ray wheel, a conda env) is not ours
    assert not any("ray-wheels" in c or "tensorflow" in c for c in prepared["head_setup_commands"])


@pytest.mark.parametrize(
    "mutate,error,message",
    [
        # a typo'd top-level key: the schema has additionalProperties false
        (
            lambda c: c.__setitem__("max_worker", c.pop("max_workers")),
            jsonschema.ValidationError,
            "max_worker",
        ),
        # a typo'd node-type key
        (
            lambda c: c["available_node_types"]["worker.gpu"].__setitem__(
                "min_worker", c["available_node_types"]["worker.gpu"].pop("min_workers")
            ),
            jsonschema.ValidationError,
            "min_worker",
        ),
        # resources are whole numbers
        (
            lambda c: c["available_node_types"]["worker.gpu"]["resources"].__setitem__("GPU", 0.5),
            jsonschema.ValidationError,
            "0.5",
        ),
        # Ray's own cross-field check, after the schema
        (lambda c: c.__setitem__("head_node_type", "head.typo"), ValueError, "head_node_type"),
    ],
    ids=["top-level-typo", "node-type-typo", "fractional-gpu", "unknown-head-type"],
)
def test_ray_validation_rejects_a_broken_copy(raw, mutate, error, message):
    broken = copy.deepcopy(raw)
    mutate(broken)
    with pytest.raises(error, match=re.escape(message)):
        validate_config(copy.deepcopy(broken))
    # and through the `ray up` path as well (prepare first, then validate)
    with pytest.raises(error, match=re.escape(message)):
        validate_config(prepare_config(copy.deepcopy(broken)))


# ------------------------------------------------------------------ what we rely on
def test_provider_is_aws_and_needs_no_credentials_to_validate(raw):
    provider = raw["provider"]
    assert provider["type"] == "aws"
    assert provider["region"] and provider["availability_zone"].startswith(provider["region"])
    assert isinstance(provider["cache_stopped_nodes"], bool)
    assert "aws_credentials" not in provider


def test_one_cpu_head_type_and_a_gpu_worker_type(prepared):
    types = prepared["available_node_types"]
    head = prepared["head_node_type"]
    assert head in types
    # the head: CPU only, stated explicitly, and never scaled out
    assert types[head]["resources"]["GPU"] == 0
    assert types[head]["resources"]["CPU"] >= 1
    assert types[head]["min_workers"] == 0 and types[head]["max_workers"] == 0
    # the only GPU-less type is the head: nothing else can take CPU-only work by accident
    assert [n for n, t in types.items() if t["resources"].get("GPU", 0) == 0] == [head]
    workers = {n: t for n, t in types.items() if n != head}
    gpu_workers = {n: t for n, t in workers.items() if t["resources"].get("GPU", 0) >= 1}
    assert gpu_workers, "no worker node type with a GPU"
    for name, t in gpu_workers.items():
        assert t["resources"]["CPU"] >= t["resources"]["GPU"], name  # 1 CPU per Train worker


def test_worker_counts_are_sane(prepared):
    total_max = prepared["max_workers"]
    assert 1 <= total_max <= 16
    types = prepared["available_node_types"]
    workers = [t for n, t in types.items() if n != prepared["head_node_type"]]
    for t in workers:
        assert 0 <= t["min_workers"] <= t["max_workers"] <= total_max
    assert sum(t["min_workers"] for t in workers) == 0  # nothing (no GPU) runs while idle
    assert 0 < prepared["idle_timeout_minutes"] <= 60
    assert prepared["upscaling_speed"] > 0


def test_every_start_command_exports_token_auth(raw):
    mounted = raw["file_mounts"]
    for command in _start_commands(raw):
        assert AUTH_EXPORT.search(command), command
        assert _exported(command, "RAY_AUTH_MODE") == "token", command
        # the token path, when set, is inside a folder that file_mounts ships
        path = _exported(command, "RAY_AUTH_TOKEN_PATH")
        if path is not None:
            remote = path.replace("$HOME", "~")
            assert any(remote.startswith(r.rstrip("/") + "/") for r in mounted), path


def test_start_commands_are_rays_standard_ones(raw):
    head = " ".join(raw["head_start_ray_commands"])
    for flag in (
        "ray start --head",
        "--port=6379",
        "--autoscaling-config=~/ray_bootstrap_config.yaml",
        "--dashboard-host=0.0.0.0",
        "--disable-usage-stats",
    ):
        assert flag in head, flag
    worker = " ".join(raw["worker_start_ray_commands"])
    assert "ray start --address=$RAY_HEAD_IP:6379" in worker
    for commands in (raw["head_start_ray_commands"], raw["worker_start_ray_commands"]):
        assert commands[0].rstrip().endswith("ray stop")
        start = _ray_start(commands)
        # Serve's ingress is HAProxy, read when each node's Ray starts, its stats page and
        # metrics on the ports docs/guide/serving.md names (the security group keeps them closed)
        assert _exported(start, "RAY_SERVE_ENABLE_HA_PROXY") == "1", commands
        assert _exported(start, "RAY_SERVE_HAPROXY_STATS_PORT") == "8404", commands
        assert _exported(start, "RAY_SERVE_HAPROXY_METRICS_PORT") == "9101", commands
    assert "--dashboard-port=8265" in _ray_start(raw["head_start_ray_commands"])


def _ray_start(commands: list[str]) -> str:
    """The one command of a node's start commands that runs ``ray start``."""
    (start,) = [c for c in commands if "ray start" in c]
    return start


SOURCES_ENV = (
    "if [ -f $HOME/.colecionador-cluster/colecionador.env ]; then set -a; "
    ". $HOME/.colecionador-cluster/colecionador.env; set +a; fi;"
)
SECRETS_DIR = (
    "if [ -d $HOME/.colecionador-cluster/secrets ]; then export "
    "COLECIONADOR_SECRETS_DIR=$HOME/.colecionador-cluster/secrets; fi;"
)


def test_every_node_starts_ray_with_the_settings(raw, prepared):
    """Every node type's `ray start` reads the same env file and secrets folder (shipped
    to every node by file_mounts) before Ray starts, so every Ray process of every node
    has the settings in its environment; the head's too, through the same lines."""
    assert "~/.colecionador-cluster" in raw["file_mounts"]
    assert set(prepared["available_node_types"]) == {"head.cpu", "worker.gpu"}
    for kind in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = _ray_start(raw[kind])
        assert SECRETS_DIR in start and SOURCES_ENV in start, kind
        # read first, then Ray started in that same shell
        assert start.index(SOURCES_ENV) < start.index("ray start"), kind
        assert start.index(SECRETS_DIR) < start.index(SOURCES_ENV), kind  # the file wins
    # and the same for every later shell on every node (ray exec, ray attach)
    bashrc = [c for c in raw["setup_commands"] if "colecionador.env" in c]
    assert len(bashrc) == 1 and ".bashrc" in bashrc[0]
    assert "set -a" in bashrc[0] and "COLECIONADOR_SECRETS_DIR" in bashrc[0]


def test_the_head_brings_the_service_up_after_ray_starts(raw):
    head = raw["head_start_ray_commands"]
    start = head.index(_ray_start(head))
    ups = [i for i, c in enumerate(head) if "colecionador up" in c]
    assert ups == [len(head) - 1] and ups[0] > start, head
    up = head[-1]
    # with the settings and Ray's token, as `ray start` had them
    assert SOURCES_ENV in up and SECRETS_DIR in up
    assert _exported(up, "RAY_AUTH_MODE") == "token"
    assert "--host 0.0.0.0" in up  # the API on every node with a replica, behind the SG
    assert not any("colecionador up" in c for c in raw["worker_start_ray_commands"])


def test_workers_have_an_instance_profile_for_the_store(raw):
    worker = raw["available_node_types"]["worker.gpu"]["node_config"]
    profile = worker["IamInstanceProfile"]
    assert set(profile) == {"Name"} and profile["Name"]
    # the head keeps Ray's own (ray-autoscaler-v1): it launches the workers
    assert "IamInstanceProfile" not in raw["available_node_types"]["head.cpu"]["node_config"]
    text = CLUSTER_YAML.read_text()
    assert "iam:PassRole" in text and profile["Name"] in text.split("cluster_name:")[0]


def test_image_and_ami_pins_are_explained(raw):
    header = CLUSTER_YAML.read_text().split("cluster_name:")[0]
    assert "pyproject.toml" in header and "@sha256:" in header and "ImageId" in header
    assert raw["docker"]["image"].startswith("rayproject/ray:2.60.0-")


def test_setup_installs_the_pinned_stack_then_the_project(raw):
    setup = raw["setup_commands"]
    pip = [i for i, c in enumerate(setup) if "pip install" in c and "torch==" in c]
    assert len(pip) == 1, setup
    words = shlex.split(setup[pip[0]])
    for pin in ("torch==2.14.1", "torchvision==0.29.1", "ray[train,tune,serve]==2.60.*"):
        assert pin in words, pin
    # the same pins as pyproject.toml on x86_64 (what the nodes are)
    pins = _pyproject_pins()
    assert pins["torch"] in words and pins["torchvision"] in words
    assert pins["ray"] in words
    # then the project, editable, from the copy in ~/colecionador, after the pins
    # (with the HAProxy extra: Serve's ingress on every node)
    editable = [i for i, c in enumerate(setup) if 'pip install -e ".[haproxy]"' in c]
    assert editable and editable[0] > pip[0], setup
    assert "cd ~/colecionador" in setup[editable[0]]
    # the container's Ray is the same release as the pin
    image = raw["docker"]["image"]
    assert re.search(r":2\.60\.\d+-py311-", image), image


def test_file_mounts_ship_the_repo_and_the_token(raw):
    mounts = raw["file_mounts"]
    # the repository, from the directory `ray up` runs in (the repo root)
    assert mounts.get("~/colecionador") == "."
    assert (REPO / mounts["~/colecionador"]).resolve() == REPO
    # the token, in a folder that every node gets; the start commands read it from there
    token_paths = {_exported(c, "RAY_AUTH_TOKEN_PATH") for c in _start_commands(raw)}
    assert len(token_paths) == 1 and None not in token_paths, token_paths
    token = token_paths.pop().replace("$HOME", "~")
    folder = next(r for r in mounts if token.startswith(r.rstrip("/") + "/"))
    assert token == f"{folder}/auth_token"
    # setup refuses to go on without it, and later shells get token auth too
    assert any("test -s" in c and token in c for c in raw["setup_commands"])
    assert any("RAY_AUTH_MODE=token" in c and ".bashrc" in c for c in raw["setup_commands"])
    # the local virtualenv and git history stay home
    assert {".venv", ".git"} <= set(raw["rsync_exclude"])


def test_services_settings_come_from_a_mounted_env_file_not_from_here(raw):
    env_folder = "~/.colecionador-cluster"
    assert env_folder in raw["file_mounts"]
    text = CLUSTER_YAML.read_text()
    # no credentials in the file itself: no AWS key ids, no Ray tokens, no private keys
    assert not re.search(r"AKIA[0-9A-Z]{16}", text)
    assert not re.search(r"\b[0-9a-f]{64}\b", text)
    assert "PRIVATE KEY" not in text
    # the settings are named for the reader (commented), with placeholders only
    for name in (
        "COLECIONADOR_DATABASE_URL",
        "COLECIONADOR_STORE_URL=s3://",
        "COLECIONADOR_S3_ENDPOINT",
    ):
        assert name in text
    # ...and set none: outside comments the only one named is the secrets folder's path
    named = [ln for ln in text.splitlines() if "COLECIONADOR_" in ln]
    set_here = [
        ln
        for ln in named
        if not ln.lstrip().startswith("#")
        and set(re.findall(r"COLECIONADOR_\w+", ln)) != {"COLECIONADOR_SECRETS_DIR"}
    ]
    assert not set_here, set_here


def test_no_secret_value_in_the_file(raw):
    """Nothing in cluster.yaml (comments included) holds a secret: every URL's password
    is a placeholder, every key or token setting has none, and no command sets one."""
    text = CLUSTER_YAML.read_text()
    for user, password in re.findall(r"://([^:/@\s]+):([^@\s]+)@", text):
        assert (user, password) == ("USER", "PASSWORD"), (user, password)
    for name in ("SECRET_KEY", "ACCESS_KEY", "API_TOKEN", "API_READ_TOKEN", "API_WRITERS"):
        for value in re.findall(rf"COLECIONADOR_{name}=(\S*)", text):
            assert value in ("...", ""), (name, value)
    commands = [c for k, v in raw.items() if k.endswith("_commands") for c in v]
    for c in commands:
        for name in re.findall(r"(?:export\s+|\s)(\w*(?:TOKEN|SECRET|PASSWORD|KEY)\w*)=", c):
            # paths to where the secrets are, never a secret
            assert name in ("RAY_AUTH_TOKEN_PATH", "COLECIONADOR_SECRETS_DIR"), (name, c)
