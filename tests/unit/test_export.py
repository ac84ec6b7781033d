"""model.onnx: export, and parity with PyTorch on onnxruntime (training/export.py)."""

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from training import export
from training.export import TOLERANCE, export_onnx, export_with_parity, onnx_probs, parity


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(0.2),
        nn.Linear(8, 3),
    ).eval()


def images(n: int = 20, size: int = 16) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, 3, size, size), dtype=np.uint8)


@pytest.fixture(scope="module")
def exported() -> tuple[nn.Module, bytes, dict]:
    model = tiny_model()
    data, info = export_onnx(model, 16)
    return model, data, info


def test_export_records_the_exporter_the_opset_and_a_dynamic_batch(exported):
    _, data, info = exported
    assert info["exporter"] == "dynamo" and "fallback_from" not in info
    proto = onnx.load_from_string(data)
    onnx.checker.check_model(proto)
    assert info["opset"] == next(o.version for o in proto.opset_import if o.domain == "")
    assert info["input"] == {"name": "input", "shape": ["batch", 3, 16, 16], "dtype": "float32"}
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [3, 16, 16]
    for n in (1, 5, 300):  # any batch, in batches of 256 too
        x = torch.randn(n, 3, 16, 16).numpy()
        assert onnx_probs(data, x).shape == (n, 3)


def test_parity_passes_for_the_exported_model(exported):
    model, data, _ = exported
    report = parity(data, model, images())
    assert report["passed"] and report["top1_agreement"] == 1.0
    assert report["max_abs_diff"] <= TOLERANCE and report["test_images"] == 20


def test_tampered_weights_fail_parity(exported):
    model, data, _ = exported
    tampered = tiny_model()
    with torch.no_grad():
        tampered[-1].bias += torch.tensor([0.0, 0.5, -0.5])
    report = parity(data, tampered, images())
    assert not report["passed"] and report["max_abs_diff"] > 1e-2


@pytest.mark.parametrize("break_it", ["weight", "op"])
def test_a_broken_onnx_graph_fails_parity(exported, break_it):
    model, data, _ = exported
    proto = onnx.load_from_string(data)
    if break_it == "weight":  # the head's weight, the one (3, 8) initializer, reversed
        (w,) = [t for t in proto.graph.initializer if tuple(t.dims) == (3, 8)]
        w.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(w)[::-1].copy(), w.name))
    else:  # the ReLU replaced by its negation
        (node,) = [n for n in proto.graph.node if n.op_type == "Relu"]
        node.op_type = "Neg"
    report = parity(proto.SerializeToString(), model, images())
    assert not report["passed"] and report["max_abs_diff"] > 1e-3


def test_a_graph_onnxruntime_cannot_load_is_reported_not_raised(monkeypatch):
    monkeypatch.setattr(export, "export_onnx", lambda model, size: (b"not onnx", {"opset": 20}))
    result = export_with_parity(tiny_model(), 16, images())
    assert result.model == b"not onnx" and not result.passed
    assert result.report["error"].startswith("onnxruntime: ")


def test_a_model_that_does_not_export_is_reported_not_raised(monkeypatch):
    def fails(*args, **kwargs):
        raise RuntimeError("unsupported operator aten::frobnicate\nmore detail")

    monkeypatch.setattr(torch.onnx, "export", fails)
    result = export_with_parity(tiny_model(), 16, images())
    assert result.model is None and not result.passed
    assert result.report == {
        "passed": False,
        "error": (
            "export failed: dynamo: RuntimeError: unsupported operator aten::frobnicate; "
            "torchscript: RuntimeError: unsupported operator aten::frobnicate"
        ),
    }
