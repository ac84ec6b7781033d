"""`colecionador up`'s recipes (what a thing runs with, and what differs), reading Serve's
details, and the command's refusals: bad settings or options exit 2 with one line saying
what to set, before anything is touched."""

from __future__ import annotations

import hashlib
import json

import pytest

from services.cli import main
from services.config import Settings
from services.deploy.options import UpOptions
from services.deploy.recipe import (
    KEY,
    differences,
    read,
    recipe,
    seal,
    sealed_equal,
    split_settings,
)
from services.deploy.serve_state import parse
from services.deploy.things import Line, where_database

SECRET = "s3-secret-Tr0ub4dor"
PASSWORD = "pg-pass-correcthorse"


def _settings(tmp_path, **kw) -> Settings:
    base = {
        "home": tmp_path,
        "database_url": f"postgresql+psycopg2://app:{PASSWORD}@db:5432/colecionador",
        "s3_secret_key": SECRET,
        "store_url": "s3://bucket/colecionador",
        "workers": 2,
    }
    return Settings(**{**base, **kw})


def test_secrets_are_split_off_and_never_stored(tmp_path):
    settings = _settings(tmp_path, api_token="tok-123456")
    public, secret = split_settings(settings)
    assert public["COLECIONADOR_STORE_URL"] == "s3://bucket/colecionador"
    assert public["COLECIONADOR_WORKERS"] == "2"
    # a URL with a password, keys and tokens stay home
    assert set(secret) >= {
        "COLECIONADOR_DATABASE_URL",
        "COLECIONADOR_S3_SECRET_KEY",
        "COLECIONADOR_API_TOKEN",
    }
    assert not set(secret) & set(public)
    stored = json.dumps(recipe("api", settings, UpOptions().api()).stored())
    for value in (SECRET, PASSWORD, "tok-123456"):
        assert value not in stored
        # nor a plain digest a dictionary attack would read at SHA-256's speed
        assert hashlib.sha256(value.encode()).hexdigest() not in stored


def test_the_seal_is_salted_and_checks_the_secrets(tmp_path):
    _, secret = split_settings(_settings(tmp_path))
    a, b = seal(secret), seal(secret)
    assert a != b and a.startswith("scrypt$")  # a new salt each time
    assert sealed_equal(a, secret) and sealed_equal(b, secret)
    assert not sealed_equal(a, {**secret, "COLECIONADOR_S3_SECRET_KEY": "other"})
    assert not sealed_equal(a, {k: v for k, v in secret.items() if "S3" not in k})
    for broken in ("", "scrypt$zz$00", "md5$00$00", a.replace("scrypt", "bcrypt")):
        assert not sealed_equal(broken, secret)


def test_same_settings_and_options_fit_and_each_change_is_named(tmp_path):
    settings = _settings(tmp_path)
    options = UpOptions()
    running = read(recipe("ingress", settings, options.ingress()).stored())
    assert running is not None
    wanted = recipe("ingress", _settings(tmp_path), options.ingress())  # another salt
    assert differences(running, wanted, settings) == []

    changed = _settings(tmp_path, workers=3)
    assert differences(running, recipe("ingress", changed, options.ingress()), changed) == [
        "COLECIONADOR_WORKERS"
    ]
    rotated = _settings(tmp_path, s3_secret_key="rotated")
    assert differences(running, recipe("ingress", rotated, options.ingress()), rotated) == [
        "secrets"
    ]
    # a setting that appears (unset before) is a change too
    added = _settings(tmp_path, plugin_modules="mypkg.*")
    assert differences(running, recipe("ingress", added, options.ingress()), added) == [
        "COLECIONADOR_PLUGIN_MODULES"
    ]
    more = UpOptions(prefetch=8).ingress()
    assert differences(running, recipe("ingress", settings, more), settings) == ["--prefetch"]
    # a thing with no recipe (`colecionador serve`, an older release) never fits
    assert differences(None, wanted, settings) == ["no recipe"]
    assert read({"kind": "ingress"}) is None and read("not a dict") is None


def test_options_split_per_thing():
    o = UpOptions(port=9000, replicas=2, predict_replicas=3, prefetch=6)
    assert o.serve() == {"host": "127.0.0.1", "port": 9000, "proxy_location": "EveryNode"}
    assert o.api()["replicas"] == 2 and "prefetch" not in o.api()
    assert o.ingress() == {"prefetch": 6}
    assert o.predict("digits")["model"] == "digits" and o.predict("x")["predict_replicas"] == 3


def test_serve_details_are_read_for_status_recipe_and_replicas(tmp_path):
    stored = recipe("api", _settings(tmp_path), UpOptions().api()).stored()
    details = {
        "proxy_location": "EveryNode",
        "http_options": {"host": "0.0.0.0", "port": 8000},
        "applications": {
            "api": {
                "status": "RUNNING",
                "deployments": {
                    "colecionador-api": {
                        "deployment_config": {"user_config": {KEY: stored}},
                        "replicas": [{"replica_id": "b"}, {"replica_id": "a"}],
                    }
                },
            },
            "other": {"status": "DEPLOY_FAILED", "deployments": {"D": {"replicas": []}}},
        },
    }
    state = parse(details)
    assert state.serve_options() == {"host": "0.0.0.0", "port": 8000, "proxy_location": "EveryNode"}
    api, other = state.apps["api"], state.apps["other"]
    assert api.recipe is not None and api.recipe.kind == "api" and not api.broken
    assert api.replica_ids == ("a", "b")
    assert other.recipe is None and other.broken


def test_lines_and_database_names_carry_no_credentials():
    url = f"postgresql+psycopg2://app:{PASSWORD}@db.internal:5432/colecionador?sslkey=k"
    assert where_database(url) == "postgresql db.internal:5432/colecionador"
    assert where_database("sqlite:////var/x.db") == "sqlite /var/x.db"
    assert str(Line("api", "kept", "http://h:1/")) == "api: kept (http://h:1/)"
    assert str(Line("ingress", "absent")) == "ingress: absent"


@pytest.mark.parametrize(
    "env,argv,message",
    [
        ({"COLECIONADOR_WORKERS": "0"}, ["up"], "colecionador up: COLECIONADOR_WORKERS: "),
        (
            {"COLECIONADOR_API_WRITERS": "ana"},
            ["down"],
            "colecionador down: COLECIONADOR_API_WRITERS: ",
        ),
        (
            {"COLECIONADOR_SECRETS_DIR": "{missing}"},
            ["up"],
            "colecionador up: COLECIONADOR_SECRETS_DIR=",
        ),
    ],
    ids=["workers", "writers", "secrets-dir"],
)
def test_bad_settings_exit_2_with_one_line_before_anything(
    env, argv, message, tmp_path, monkeypatch, capsys
):
    for k, v in env.items():
        monkeypatch.setenv(k, v.format(missing=tmp_path / "missing"))
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(message) and "set it" in err
    assert not (tmp_path / "home").exists() or not any((tmp_path / "home").rglob("*.db"))


@pytest.mark.parametrize(
    "argv,message",
    [
        (["up", "--port", "0"], "--port: "),
        (["up", "--prefetch", "0"], "--prefetch: "),
        (["up", "--proxy-location", "Everywhere"], "--proxy-location: "),
        (["up", "--predict-alias", "Prod!"], "--predict-alias: "),
        (["up", "--replicas", "two"], "--replicas: invalid int value"),
    ],
)
def test_bad_options_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err
