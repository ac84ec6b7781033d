"""Ray's storage filesystem pickles without the S3 secret and finds it on the node."""

from __future__ import annotations

import pickle

import pytest

from services.store.node_fs import NodeS3, SecretMissingOnNode, node_s3_filesystem

SECRET = "s3cr3t-never-in-a-pickle"


def test_the_secret_is_never_pickled_and_is_read_on_the_node(monkeypatch):
    from services.store import node_fs

    filesystem = node_s3_filesystem("http://127.0.0.1:1", "us-east-1", "AK", SECRET)
    blob = pickle.dumps(filesystem)
    assert SECRET.encode() not in blob and b"AK" in blob
    # in this process, a copy uses the secret it was given (Ray copies in the driver too)
    assert SECRET.encode() in pickle.dumps(pickle.loads(blob).handler.s3)
    monkeypatch.setattr(node_fs, "_GIVEN", {})  # as on another node
    monkeypatch.setenv("COLECIONADOR_S3_SECRET_KEY", "the-nodes-own")
    copy = pickle.loads(blob)
    assert copy.equals(filesystem)
    s3 = copy.handler.s3  # built from this node's settings
    assert b"the-nodes-own" in pickle.dumps(s3)


def test_a_node_without_the_secret_says_what_to_set(monkeypatch):
    from services.store import node_fs

    monkeypatch.delenv("COLECIONADOR_S3_SECRET_KEY", raising=False)
    blob = pickle.dumps(NodeS3(None, "us-east-1", "AK", SECRET))
    monkeypatch.setattr(node_fs, "_GIVEN", {})  # another node
    copy = pickle.loads(blob)
    with pytest.raises(SecretMissingOnNode, match="COLECIONADOR_S3_SECRET_KEY on every node"):
        _ = copy.s3


def test_no_access_key_is_the_nodes_own_credentials(monkeypatch):
    monkeypatch.delenv("COLECIONADOR_S3_SECRET_KEY", raising=False)
    copy = pickle.loads(pickle.dumps(NodeS3(None, "us-east-1", None, None)))
    assert copy.s3 is not None  # an instance profile, say: pyarrow's own chain
