"""model.onnx: the eval model exported with ``torch.onnx``, and its parity with PyTorch.

The graph takes what the PyTorch model takes: float32 ``(batch, 3, S, S)`` at the trained
image size, already normalised (model.pt's ``normalize``), and returns the logits divided by
model.pt's ``temperature`` (training/calibration.py; 1.0 leaves them as they are), so that its
softmax is the calibrated probability every predict path returns; the batch axis is dynamic.
Parity runs the test split through onnxruntime (CPU) and through PyTorch (the same
temperature) and compares the softmax probabilities (max absolute difference) and the
top-1 labels.

Exporter: torch's default, the dynamo exporter (``torch.export`` + onnxscript); should it
fail for a backbone, the TorchScript exporter is tried before giving up. The graph is
left as exported (``optimize=False``: ~40 % less export time measured); onnxruntime
optimises it when it loads it. Nothing here
raises for a model that does not export: the report says why (``error``).
"""

from __future__ import annotations

import contextlib
import io
import math
import time
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from training.augment import eval_transform
from training.messages import typed_line

INPUT, OUTPUT = "input", "logits"
# Probabilities from onnxruntime and PyTorch differ by float32 rounding alone: measured
# 9e-7 on a ResNet18 trained on digits at 32 px (mean top-1 probability 0.99), 1e-8 to
# 2e-7 on untrained mobilenet_v2/v3_small and resnet18; 1e-4 leaves two orders of
# magnitude for kernel differences while a wrong weight or op moves them by 1e-2 and more.
TOLERANCE = 1e-4


@dataclass(frozen=True)
class OnnxExport:
    model: bytes | None  # model.onnx; None when the export failed
    report: dict[str, Any]  # metrics.json's "onnx" section

    @property
    def passed(self) -> bool:
        return bool(self.report.get("passed"))


class TemperatureScaled(nn.Module):
    """``model(x) / temperature``: the calibrated logits, as one graph to export."""

    temperature: torch.Tensor  # a buffer (register_buffer)

    def __init__(self, model: nn.Module, temperature: float):
        super().__init__()
        self.model = model
        self.register_buffer("temperature", torch.tensor(float(temperature)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.model(x)
        return logits / self.temperature


def _normalised(images: np.ndarray) -> torch.Tensor:
    x: torch.Tensor = eval_transform()(torch.from_numpy(np.ascontiguousarray(images)))
    return x


def export_onnx(model: nn.Module, image_size: int) -> tuple[bytes, dict[str, Any]]:
    """The ONNX bytes of ``model`` (in eval mode) and how they were made: exporter, opset,
    seconds. Raises the last exporter's error when none of them works."""
    model = model.eval().cpu()
    example = (torch.zeros(2, 3, image_size, image_size),)  # 2: a batch of 1 specialises
    errors: list[str] = []
    for exporter in ("dynamo", "torchscript"):
        t0 = time.perf_counter()
        try:
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
                warnings.simplefilter("ignore")
                if exporter == "dynamo":
                    program = torch.onnx.export(
                        model,
                        example,
                        dynamo=True,
                        verbose=False,
                        optimize=False,
                        input_names=[INPUT],
                        output_names=[OUTPUT],
                        dynamic_shapes=({0: torch.export.Dim("batch")},),
                    )
                    assert program is not None  # dynamo=True always returns the program
                    data = program.model_proto.SerializeToString()
                else:
                    buf = io.BytesIO()
                    torch.onnx.export(
                        model,
                        example,
                        buf,  # type: ignore[arg-type]  # torch names paths; files work too
                        dynamo=False,
                        input_names=[INPUT],
                        output_names=[OUTPUT],
                        dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}},
                    )
                    data = buf.getvalue()
        except Exception as e:  # noqa: BLE001 - each exporter fails in its own ways
            errors.append(f"{exporter}: {typed_line(e, 300)}")
            continue
        import onnx

        proto = onnx.load_from_string(data)
        opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
        info: dict[str, Any] = {
            "exporter": exporter,
            "opset": int(opset),
            "export_s": round(time.perf_counter() - t0, 3),
            "input": {
                "name": INPUT,
                "shape": ["batch", 3, image_size, image_size],
                "dtype": "float32",
            },
            "output": OUTPUT,
            "size_bytes": len(data),
        }
        if errors:
            info["fallback_from"] = errors
        return data, info
    raise RuntimeError("; ".join(errors))


def onnx_probs(onnx_model: bytes, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Softmax probabilities of an ONNX classifier on onnxruntime's CPU provider."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(onnx_model, options, providers=["CPUExecutionProvider"])
    out = [
        session.run([OUTPUT], {INPUT: x[s : s + batch_size]})[0]
        for s in range(0, len(x), batch_size)
    ]
    return torch.softmax(torch.from_numpy(np.concatenate(out)).float(), dim=1).numpy()


@torch.inference_mode()
def parity(
    onnx_model: bytes, model: nn.Module, images: np.ndarray, tolerance: float = TOLERANCE
) -> dict[str, Any]:
    """ONNX against PyTorch on uint8 ``(N, 3, S, S)`` images: the max absolute difference of
    the softmax probabilities and the share of equal top-1 labels; passed when the
    difference is within ``tolerance`` and every top-1 label agrees."""
    t0 = time.perf_counter()
    if len(images) == 0:
        return {"passed": False, "error": "no test images to compare on", "test_images": 0}
    x = _normalised(images)
    model = model.eval().cpu()
    ref = torch.cat(
        [torch.softmax(model(x[s : s + 256]).float(), dim=1) for s in range(0, len(x), 256)]
    ).numpy()
    got = onnx_probs(onnx_model, x.numpy())
    diff = float(np.abs(got - ref).max())
    agreement = float((got.argmax(1) == ref.argmax(1)).mean())
    if not math.isfinite(diff):  # NaN in either: nothing JSON or a gate rule can hold
        return {
            "max_abs_diff": None,
            "top1_agreement": agreement,
            "tolerance": tolerance,
            "test_images": int(len(images)),
            "passed": False,
            "error": "non-finite probabilities",
        }
    return {
        "max_abs_diff": diff,
        "top1_agreement": agreement,
        "tolerance": tolerance,
        "test_images": int(len(images)),
        "parity_s": round(time.perf_counter() - t0, 3),
        "passed": bool(diff <= tolerance and agreement == 1.0),
    }


def export_with_parity(
    model: nn.Module,
    image_size: int,
    images: np.ndarray,
    tolerance: float = TOLERANCE,
    temperature: float = 1.0,
) -> OnnxExport:
    """Export and check on ``images`` (the test split); never raises: a model that cannot
    be exported or run comes back without bytes, its report saying why. With a
    ``temperature`` other than 1 the graph outputs the logits divided by it (the report
    says so) and parity compares with PyTorch's softmax(logits / temperature)."""
    scaled = {"temperature": float(temperature), "output_is": "logits / temperature"}
    if temperature != 1.0:
        model = TemperatureScaled(model.eval(), temperature)
    try:
        data, info = export_onnx(model, image_size)
    except Exception as e:  # noqa: BLE001
        return OnnxExport(None, {"passed": False, "error": f"export failed: {e}"})
    try:
        check = parity(data, model, images, tolerance)
    except Exception as e:  # noqa: BLE001 - onnxruntime cannot load or run the graph
        check = {
            "passed": False,
            "error": f"onnxruntime: {typed_line(e, 300)}",
        }
    return OnnxExport(data, {**info, **scaled, **check})
