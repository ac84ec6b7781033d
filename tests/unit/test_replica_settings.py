"""What a Serve replica is sent (services/replica_settings.py): every setting but the
secrets, which it reads on its node and checks against the sender's fingerprints."""

from __future__ import annotations

import pickle

import pytest
from pydantic import SecretStr

from services.config import Settings
from services.jobs.ray_jobs import settings_env
from services.replica_settings import ReplicaSettings, SecretNotOnNode, stays_on_node

SECRETS = {
    "database_url": "postgresql://app:pg-pass-123@db/prod",
    "s3_secret_key": "s3-secret-456",
    "broker_url": "amqp://app:mq-pass-789@mq:5672/",
    "api_token": "write-token-abc",
    "api_read_token": "read-token-def",
    "api_writers": "ana=ana-token-ghi",
    "mlflow_tracking_uri": "https://u:mlflow-pass-jkl@mlflow/",
}


def sender(tmp_path, **kw) -> Settings:
    return Settings(home=tmp_path / "home", store_url="s3://b/store", workers=3, **kw)


def test_no_secret_travels_in_what_a_replica_is_sent(tmp_path):
    sent = ReplicaSettings.of(sender(tmp_path, **SECRETS))
    blob = pickle.dumps(sent)
    for value in SECRETS.values():
        for part in (value, value.split("@")[0].rsplit(":", 1)[-1]):  # whole, password
            assert part.encode() not in blob, part
    assert sent.values["workers"] == 3 and sent.values["store_url"] == "s3://b/store"
    assert set(sent.fingerprints) == set(SECRETS)


def test_a_node_with_the_same_secrets_resolves_the_senders_settings(tmp_path):
    settings = sender(tmp_path, **SECRETS)
    node = Settings(home=tmp_path / "elsewhere", workers=1, **SECRETS)
    got = ReplicaSettings.of(settings).resolve(node)
    assert got.model_dump() == settings.model_dump()  # the sender's, secrets included
    assert got.api_token.get_secret_value() == SECRETS["api_token"]
    assert got.home == tmp_path / "home" and got.workers == 3  # not the node's own
    assert got.model_fields_set == settings.model_fields_set


@pytest.mark.parametrize("name", sorted(SECRETS))
def test_a_node_without_a_secret_or_with_another_refuses_naming_it(tmp_path, name):
    sent = ReplicaSettings.of(sender(tmp_path, **SECRETS))
    others = {k: v for k, v in SECRETS.items() if k != name}
    state = "another" if name == "broker_url" else "no"  # the node's default broker: another
    with pytest.raises(
        SecretNotOnNode, match=f"has {state} {name}.*: set COLECIONADOR_{name.upper()}"
    ):
        sent.resolve(Settings(**others))
    other = "ana=x" if name == "api_writers" else "amqp://u:other@h/" if "url" in name else "x"
    with pytest.raises(SecretNotOnNode, match=f"has another {name} than the deploying"):
        sent.resolve(Settings(**others, **{name: other}))


def test_a_secret_the_sender_had_not_is_not_taken_from_the_node(tmp_path):
    sent = ReplicaSettings.of(sender(tmp_path))  # the default broker: the node's must match
    got = sent.resolve(Settings(**{k: v for k, v in SECRETS.items() if k != "broker_url"}))
    assert got.api_token is None and got.s3_secret_key is None
    assert got.database_url is None  # the sender's embedded SQLite under its home
    assert got.broker_url.get_secret_value() == Settings().broker_url.get_secret_value()
    assert "broker_url" not in got.model_fields_set  # "not told": refused on a cluster


def test_urls_without_credentials_travel_as_they_do_to_a_driver(tmp_path):
    settings = sender(tmp_path, database_url="postgresql://127.0.0.1/test")
    sent = ReplicaSettings.of(settings)
    assert sent.values["database_url"].get_secret_value() == "postgresql://127.0.0.1/test"
    got = sent.resolve(Settings())  # the node has no database_url: none needed
    assert got.db_url == "postgresql://127.0.0.1/test"
    assert settings_env(settings)["COLECIONADOR_DATABASE_URL"] == "postgresql://127.0.0.1/test"


def test_one_rule_says_what_stays_on_the_node():
    assert stays_on_node("api_token", SecretStr("t"))
    assert stays_on_node("database_url", SecretStr("postgresql://u:p@h/db"))
    assert stays_on_node("database_url", SecretStr("postgresql://h/db?sslkey=k"))
    assert not stays_on_node("database_url", SecretStr("sqlite:///x.db"))
    assert stays_on_node("store_url", "s3://key:secret@bucket/x")
    assert not stays_on_node("store_url", "s3://bucket/x") and not stays_on_node("workers", 2)
