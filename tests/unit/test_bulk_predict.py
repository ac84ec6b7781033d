"""training/bulk_predict.py: one batch of listed images -> one row each, the predict app's
decode and calibrated probabilities, an unreadable image a row with its reason; the
listing of a folder or a prefix; the CSV's flat columns."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pytest
import torch
from PIL import Image

from training.bulk_predict import (
    SCHEMA,
    BatchPredictor,
    ImageSource,
    csv_table,
    image_objects,
    list_folder,
)
from training.data import DataError
from training.evaluate import predict_logits
from training.hyperparams import Hyperparameters
from training.label_issues import feature_extractor
from training.model import build_model, export_model, head_prefix
from training.predict import Predictor, decode_image

CLASSES = ["cat", "dog", "owl"]


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    torch.manual_seed(0)
    hp = Hyperparameters(backbone="mobilenet_v3_small", image_size=32)
    package = export_model(build_model("mobilenet_v3_small", len(CLASSES)), hp, CLASSES)
    package["temperature"] = 1.7  # calibrated: every predict path divides the logits by it
    return Predictor.from_package(package)


def _png(seed: int, size: tuple[int, int] = (20, 14)) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (*size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "images"
    (root / "sub").mkdir(parents=True)
    for i in range(3):
        (root / f"{i}.png").write_bytes(_png(i))
    (root / "sub" / "deep.png").write_bytes(_png(9))
    (root / "broken.png").write_bytes(b"\x89PNG not really")
    (root / "notes.txt").write_text("not an image")
    (root / ".hidden.png").write_bytes(_png(5))
    outside = tmp_path / "secret.png"
    outside.write_bytes(_png(7))
    (root / "link.png").symlink_to(outside)
    return root


def _batch(listing):
    return {
        "path": np.array([r[0] for r in listing], dtype=object),
        "bytes": np.array([r[1] for r in listing], np.int64),
        "etag": np.array([r[2] for r in listing], dtype=object),
    }


def test_a_folder_lists_its_images_at_any_depth_in_path_order(folder):
    names = [r[0] for r in list_folder(folder)]
    assert names == ["0.png", "1.png", "2.png", "broken.png", "link.png", "sub/deep.png"]


def test_a_batch_gives_one_row_per_image_with_the_predict_apps_probabilities(folder, predictor):
    listing = list_folder(folder)
    table = BatchPredictor(predictor, ImageSource(root=str(folder)), k=3)(_batch(listing))
    assert table.schema == SCHEMA and table.num_rows == len(listing)
    rows = {r["path"]: r for r in table.to_pylist()}
    for name in ("0.png", "1.png", "2.png", "sub/deep.png"):
        row = rows[name]
        assert row["error"] is None and len(row["labels"]) == 3
        assert sum(row["probabilities"]) == pytest.approx(1.0, abs=1e-6)
        # what the predict app answers for the same bytes (decode_image + Predictor.predict)
        app = predictor.predict(decode_image((folder / name).read_bytes(), 32)[None], k=3)[0]
        assert row["labels"] == [p["label"] for p in app]
        np.testing.assert_allclose(row["probabilities"], [p["probability"] for p in app], 1e-6)
        assert (row["label"], row["probability"]) == (row["labels"][0], row["probabilities"][0])
    assert rows["broken.png"]["error"] == "not a readable image (UnidentifiedImageError)"
    assert rows["broken.png"]["labels"] == [] and rows["broken.png"]["label"] is None
    assert "outside the folder" in rows["link.png"]["error"]


def test_the_temperature_is_applied(folder, predictor):
    raw = decode_image((folder / "0.png").read_bytes(), 32)[None]
    plain = Predictor(predictor.model, predictor.classes, 32, 1.0)
    batch = _batch([("0.png", -1, "")])
    hot = BatchPredictor(predictor, ImageSource(root=str(folder)), k=3)(batch)
    cold = BatchPredictor(plain, ImageSource(root=str(folder)), k=3)(batch)
    assert hot["probability"][0].as_py() < cold["probability"][0].as_py()
    logits = torch.log(torch.from_numpy(plain.probs(raw)))
    expected = torch.softmax(logits / 1.7, dim=1).numpy().max()
    assert hot["probability"][0].as_py() == pytest.approx(float(expected), abs=1e-5)


class Bucket:
    """A remote listing's reader (training.data.ObjectReader) over a dict: one object
    changed since it was listed, one too large for its limit."""

    def __init__(self, objects: dict[str, bytes]):
        self.objects = objects

    def read(self, name: str, etag: str, limit: int) -> bytes:
        if etag == "stale":
            raise OSError("changed since the data set was listed")
        return self.objects[name][: limit + 1]


def test_a_remote_batch_reads_through_the_reader_and_keeps_going(predictor):
    source = ImageSource(reader=Bucket({"a.png": _png(1), "b.png": _png(2)}))
    listing = [("a.png", 100, "e1"), ("b.png", 100, "stale"), ("huge.png", 2**40, "e3")]
    rows = BatchPredictor(predictor, source, k=1)(_batch(listing)).to_pylist()
    assert rows[0]["error"] is None and len(rows[0]["labels"]) == 1
    assert rows[1]["error"] == "OSError: changed since the data set was listed"
    assert "over the 50 MB limit" in rows[2]["error"]  # from the listing: never read


def test_a_batch_of_only_bad_images_is_rows_too(tmp_path, predictor):
    (tmp_path / "x.png").write_bytes(b"")
    table = BatchPredictor(predictor, ImageSource(root=str(tmp_path)))(
        _batch([("x.png", 0, ""), ("gone.png", -1, "")])
    )
    assert table.column("error").null_count == 0
    assert table["error"][1].as_py().startswith("FileNotFoundError")


def test_listing_refuses_names_that_leave_the_prefix_and_skips_hidden_ones():
    objects = [("b/2.jpg", 1, "x"), ("a.PNG", 1, "y"), (".git/x.png", 1, ""), ("r.csv", 1, "")]
    assert [r[0] for r in image_objects(objects, "s3://b/p/")] == ["a.PNG", "b/2.jpg"]
    with pytest.raises(DataError, match="leaves the folder"):
        image_objects([("../other/x.png", 1, "")], "s3://b/p/")
    with pytest.raises(DataError, match="no images under s3://b/p/"):
        image_objects([("r.csv", 1, "")], "s3://b/p/")


def test_the_csv_spreads_the_top_k_over_columns():
    table = pa.Table.from_pylist(
        [
            {"path": "a", "labels": ["x", "y"], "probabilities": [0.75, 0.25], "error": None},
            {"path": "b", "labels": [], "probabilities": [], "error": "bad"},
        ],
        schema=SCHEMA,
    )
    flat = csv_table(table, 2).to_pylist()
    assert flat[0] == {
        "path": "a",
        "label_1": "x",
        "probability_1": 0.75,
        "label_2": "y",
        "probability_2": 0.25,
        "error": None,
    }
    assert flat[1]["label_1"] is None and flat[1]["error"] == "bad"


def test_a_store_that_cannot_be_reached_fails_the_batch_not_a_row(predictor):
    class Away:
        def read(self, name: str, etag: str, limit: int) -> bytes:
            raise RuntimeError("cannot read s3://b/p/a.png: connection refused")

    with pytest.raises(RuntimeError, match="connection refused"):  # the job fails, saying so
        BatchPredictor(predictor, ImageSource(reader=Away()))(_batch([("a.png", 10, "e")]))


def test_with_embed_each_row_has_its_margin_and_the_features_the_head_sees(folder, predictor):
    listing = list_folder(folder)
    source = ImageSource(root=str(folder))
    plain = BatchPredictor(predictor, source, k=3)(_batch(listing))
    table = BatchPredictor(predictor, source, k=3, embed=True)(_batch(listing))
    assert table.schema.names == [*SCHEMA.names, "margin", "embedding"]
    for same, row in zip(plain.to_pylist(), table.select(SCHEMA.names).to_pylist()):
        assert (same["path"], same["labels"], same["error"]) == (
            row["path"],
            row["labels"],
            row["error"],
        )
        np.testing.assert_allclose(same["probabilities"], row["probabilities"], rtol=1e-6)
    head = predictor.model.get_submodule(head_prefix(predictor.model)[:-1])
    raw = np.stack([decode_image((folder / "0.png").read_bytes(), 32)])
    features = predict_logits(feature_extractor(predictor.model), raw)[0]
    for row in table.to_pylist():
        if row["error"] is not None:
            assert row["margin"] is None and row["embedding"] is None
            continue
        p = row["probabilities"]
        assert row["margin"] == pytest.approx(p[0] - p[1], abs=1e-6)
        assert len(row["embedding"]) == head.in_features
    zero = next(r for r in table.to_pylist() if r["path"] == "0.png")
    np.testing.assert_allclose(zero["embedding"], features, rtol=1e-4, atol=1e-5)
