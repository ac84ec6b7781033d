"""Embedded defaults are for one node: on a cluster of several, every process that would
use a local store, SQLite, or a broker it was not told about says what to set."""

from __future__ import annotations

import pytest

from services.config import Settings


@pytest.fixture
def bare(tmp_path, monkeypatch) -> Settings:
    monkeypatch.delenv("COLECIONADOR_BROKER_URL", raising=False)
    return Settings(home=tmp_path)


def test_one_node_is_served_by_its_own_folders(bare):
    assert bare.embedded_on_cluster(1) is None


def test_several_nodes_name_every_default_to_set_in_one_line(bare):
    problem = bare.embedded_on_cluster(3)
    assert problem is not None and "\n" not in problem
    assert "cluster has 3 nodes" in problem
    for name in ("COLECIONADOR_STORE_URL", "COLECIONADOR_DATABASE_URL", "COLECIONADOR_BROKER_URL"):
        assert name in problem
    assert str(bare.store) in problem  # which folder it would have used


def test_only_what_the_process_uses_is_asked_for(bare):
    problem = bare.embedded_on_cluster(2, uses=("database",))
    assert "DATABASE_URL" in problem and "STORE_URL" not in problem and "BROKER" not in problem
    assert bare.embedded_on_cluster(2, uses=()) is None


def test_what_the_operator_named_is_taken_as_meant(tmp_path, monkeypatch):
    monkeypatch.setenv("COLECIONADOR_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/")
    named = Settings(home=tmp_path, store_url="/mnt/nfs/store", database_url="postgresql://h/db")
    assert named.embedded_on_cluster(4) is None  # a named folder is shared (NFS); a named broker
    assert (
        Settings(
            home=tmp_path,
            store_url="s3://b/p",
            database_url="sqlite:////nfs/x.db",
            broker_url="amqp://b/",
        ).embedded_on_cluster(2)
        is None
    )


def test_the_message_carries_no_secret(tmp_path, monkeypatch):
    monkeypatch.delenv("COLECIONADOR_BROKER_URL", raising=False)
    s = Settings(home=tmp_path, database_url="postgresql://u:hunter2@db/x", s3_secret_key="k3y")
    problem = s.embedded_on_cluster(2)
    assert "hunter2" not in problem and "k3y" not in problem and "DATABASE_URL" not in problem
