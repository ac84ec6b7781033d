"""A pyarrow S3 filesystem whose secret never travels: what Ray Train and Ray Tune get as
``storage_filesystem``.

Ray pickles the filesystem it is given into every worker's arguments, and Tune writes it
into ``tuner.pkl`` and its experiment state in the store itself: a pyarrow
``S3FileSystem`` pickles its secret key with it, so anyone who could read the bucket
would get its write key. ``NodeS3`` (a ``pyarrow.fs.FileSystemHandler``, wrapped in a
``PyFileSystem``) pickles the endpoint, region and access key only; where it is unpickled
(a Train worker, a trial, a restored Tuner) it reads the secret key from that node's
settings (its environment or COLECIONADOR_SECRETS_DIR), as every other process of the
service does, the first time it is used there; in the process that made it (a copy Ray
makes in the driver), the secret that process was given.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

from pyarrow import fs

# secrets this process was given, by (endpoint, access key): a copy unpickled in the
# process that made the filesystem (Ray Data and Train copy their arguments in the driver
# too) uses the secret the process already holds, whatever its environment says
_GIVEN: dict[tuple[str | None, str | None], str] = {}


class SecretMissingOnNode(RuntimeError):
    """The access key needs a secret that this node's settings do not hold."""


def _node_secret() -> str | None:
    from services.config import Settings

    secret = Settings().s3_secret_key
    return secret.get_secret_value() if secret is not None else None


class NodeS3(fs.FileSystemHandler):  # type: ignore[misc]  # pyarrow ships no types
    """S3 through pyarrow, the secret key resolved on each node (see the module)."""

    def __init__(
        self, endpoint: str | None, region: str, access_key: str | None, secret_key: str | None
    ):
        self.endpoint, self.region, self.access_key = endpoint, region, access_key
        self._fs = None
        if secret_key is not None:
            _GIVEN[(endpoint, access_key)] = secret_key
            self._fs = self._build(secret_key)

    def __getstate__(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint, "region": self.region, "access_key": self.access_key}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _fs=None)

    def _build(self, secret_key: str | None) -> fs.S3FileSystem:
        url = urlparse(self.endpoint) if self.endpoint else None
        return fs.S3FileSystem(
            access_key=self.access_key,
            secret_key=secret_key,
            region=self.region,
            endpoint_override=url.netloc if url else None,
            scheme=url.scheme if url else "https",
            force_virtual_addressing=False,
        )

    @property
    def s3(self) -> fs.S3FileSystem:
        if self._fs is None:
            secret = _GIVEN.get((self.endpoint, self.access_key)) or _node_secret()
            if self.access_key is not None and secret is None:
                import socket

                raise SecretMissingOnNode(
                    f"node {socket.gethostname()} has no S3 secret key for access key "
                    f"{self.access_key}: set COLECIONADOR_S3_SECRET_KEY on every node (or "
                    "its file colecionador_s3_secret_key in COLECIONADOR_SECRETS_DIR)"
                )
            self._fs = self._build(secret)
        return self._fs

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NodeS3) and self.__getstate__() == other.__getstate__()

    def __ne__(self, other: object) -> bool:
        return not self == other

    def get_type_name(self) -> str:
        return "colecionador-node-s3"

    def normalize_path(self, path: str) -> str:
        return str(self.s3.normalize_path(path))

    def get_file_info(self, paths: list[str]) -> list[fs.FileInfo]:
        return list(self.s3.get_file_info(paths))

    def get_file_info_selector(self, selector: fs.FileSelector) -> list[fs.FileInfo]:
        return list(self.s3.get_file_info(selector))

    def create_dir(self, path: str, recursive: bool) -> None:
        self.s3.create_dir(path, recursive=recursive)

    def delete_dir(self, path: str) -> None:
        self.s3.delete_dir(path)

    def delete_dir_contents(self, path: str, missing_dir_ok: bool = False) -> None:
        self.s3.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

    def delete_root_dir_contents(self) -> None:
        self.s3.delete_dir_contents("", accept_root_dir=True)

    def delete_file(self, path: str) -> None:
        self.s3.delete_file(path)

    def move(self, src: str, dest: str) -> None:
        self.s3.move(src, dest)

    def copy_file(self, src: str, dest: str) -> None:
        self.s3.copy_file(src, dest)

    def open_input_stream(self, path: str) -> Any:
        return self.s3.open_input_stream(path)

    def open_input_file(self, path: str) -> Any:
        return self.s3.open_input_file(path)

    def open_output_stream(self, path: str, metadata: Any) -> Any:
        return self.s3.open_output_stream(path, metadata=metadata)

    def open_append_stream(self, path: str, metadata: Any) -> Any:
        return self.s3.open_append_stream(path, metadata=metadata)


def node_s3_filesystem(
    endpoint: str | None, region: str, access_key: str | None, secret_key: str | None
) -> fs.PyFileSystem:
    """The filesystem for Ray's storage: this process uses ``secret_key`` as given; a
    pickled copy resolves it on the node that unpickles it."""
    return fs.PyFileSystem(NodeS3(endpoint, region, access_key, secret_key))
