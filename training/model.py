"""Backbone + new head, weight loading, and freezing / unfreezing the last N layers.

Any torchvision classification model whose classifier ends in a ``nn.Linear`` works
(mobilenet, resnet, efficientnet, regnet, convnext, vit, ...). The head is that last Linear,
replaced by a fresh one for the job's classes, with the head's dropout set to ``dropout``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast
from urllib.parse import urlparse

import torch
from torch import nn
from torchvision import models as tvm

from training.hyperparams import is_weights_name as is_weights_name  # re-exported


class WeightsError(ValueError):
    """The weights file does not fit the backbone; the message says how."""


def _last_linear(model: nn.Module) -> tuple[str, nn.Linear]:
    found = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not found:
        raise ValueError(f"{type(model).__name__} has no Linear classifier to replace")
    return found[-1]


def head_prefix(model: nn.Module) -> str:
    """Parameter-name prefix of the head (the last Linear), e.g. ``classifier.1.``."""
    name, _ = _last_linear(_unwrap(model))
    return name + "."


def _unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model)


def build_model(backbone: str, num_classes: int, dropout: float = 0.2) -> nn.Module:
    """A torchvision model with random weights and a new head of ``num_classes`` outputs."""
    try:
        model: nn.Module = tvm.get_model(backbone, weights=None)
    except ValueError as e:
        raise ValueError(f"unknown backbone {backbone!r}: {e}") from None
    name, old = _last_linear(model)
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    new = nn.Linear(old.in_features, num_classes)
    dropouts = [m for m in parent.children() if isinstance(m, nn.Dropout)]
    if isinstance(parent, nn.Sequential) and dropouts:
        for d in dropouts:
            d.p = dropout
        setattr(parent, attr, new)
    else:
        setattr(parent, attr, nn.Sequential(nn.Dropout(dropout), new))
    return model


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a file: a plain state dict, or our model.pt ({'state_dict': ...})."""
    try:
        obj = torch.load(Path(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise WeightsError(f"weights file not found: {path}") from None
    except Exception as e:  # noqa: BLE001 - torch raises many kinds for a bad file
        raise WeightsError(f"cannot read weights {path}: {type(e).__name__}: {e}") from None
    if isinstance(obj, dict) and "state_dict" in obj:
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path} does not hold a state dict")
    return obj


# ----------------------------------------------------------------- weights by name
# is_weights_name (training/hyperparams.py, torch-free: lineage reads it too) tells a name of
# torchvision's registered weights from a file.


def resolve_weights(backbone: str, name: str) -> Any:
    """The torchvision ``WeightsEnum`` member that ``name`` means for ``backbone``;
    WeightsError naming the valid names when there is none."""
    try:
        enum = tvm.get_model_weights(backbone)
    except (ValueError, KeyError):
        raise WeightsError(
            f"{backbone} has no registered pretrained weights "
            f"(asked for {name!r}): name a file instead"
        ) from None
    valid = ["imagenet", *enum.__members__]
    member = "DEFAULT" if name.lower() == "imagenet" else name
    if "." in member:
        enum_name, _, member = member.partition(".")
        if enum_name != enum.__name__:
            raise WeightsError(
                f"{name!r} are not weights of {backbone} "
                f"({enum.__name__}); valid names: {', '.join(valid)}"
            )
    try:
        return enum[member]
    except KeyError:
        raise WeightsError(
            f"unknown weights {name!r} for {backbone}; valid names: {', '.join(valid)}"
        ) from None


def weights_file(weights: Any, torch_home: Path) -> Path:
    """Where torch.hub keeps ``weights`` under ``torch_home``
    (``<torch_home>/hub/checkpoints/<the URL's file name>``, as with ``TORCH_HOME``)."""
    return Path(torch_home) / "hub" / "checkpoints" / Path(urlparse(weights.url).path).name


def load_named_weights(backbone: str, name: str, torch_home: Path) -> dict[str, torch.Tensor]:
    """torchvision's registered weights for ``backbone``, through torch.hub's download and
    cache under ``torch_home`` (downloaded once, read from the cache after). Offline and
    not cached: WeightsError naming the file to put where."""
    weights = resolve_weights(backbone, name)
    path = weights_file(weights, torch_home)
    try:
        state: dict[str, torch.Tensor] = weights.get_state_dict(
            model_dir=str(path.parent), progress=False, check_hash=True, weights_only=True
        )
    except OSError as e:  # URLError, socket errors, a full disk
        what = "imagenet" if name.lower() == "imagenet" else name
        raise WeightsError(
            f"{what} weights for {backbone} ({weights}) are not cached and cannot "
            f"be downloaded ({getattr(e, 'reason', e)}): put {path.name} in {path.parent}"
        ) from None
    except Exception as e:  # noqa: BLE001 - a corrupt or truncated cache file
        raise WeightsError(f"cannot read {path}: {type(e).__name__}: {e}") from None
    return state


def load_backbone_weights(model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Load every backbone tensor from ``state``; the head stays new.

    Every backbone parameter and buffer must be present with the right shape, or
    WeightsError says which are not. Returns what was loaded and what was left out.
    """
    own = model.state_dict()
    head = head_prefix(model)
    backbone_keys = [k for k in own if not k.startswith(head)]
    missing = [k for k in backbone_keys if k not in state]
    wrong = [k for k in backbone_keys if k in state and state[k].shape != own[k].shape]
    if missing or wrong:
        detail = []
        if missing:
            detail.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if wrong:
            k = wrong[0]
            detail.append(
                f"{len(wrong)} of another shape (e.g. {k}: "
                f"{tuple(state[k].shape)} vs {tuple(own[k].shape)})"
            )
        raise WeightsError("weights do not fit the backbone: " + ", ".join(detail))
    model.load_state_dict({k: state[k] for k in backbone_keys}, strict=False)
    unused = sorted(set(state) - set(backbone_keys))
    return {"loaded": len(backbone_keys), "skipped": unused}


def layers_with_params(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Backbone modules that own parameters, input end first (the head excluded)."""
    model = _unwrap(model)
    head = head_prefix(model)
    return [
        (n, m)
        for n, m in model.named_modules()
        if n and not (n + ".").startswith(head) and any(True for _ in m.parameters(recurse=False))
    ]


def set_phase(model: nn.Module, phase: int, unfreeze_last: int) -> dict[str, int]:
    """Phase 1: only the head trains. Phase 2: the head and the last N backbone layers.

    Returns counts of trainable layers and parameters, for the log.
    """
    model = _unwrap(model)
    head = head_prefix(model)
    for name, p in model.named_parameters():
        p.requires_grad = name.startswith(head)
    layers = layers_with_params(model)
    opened = layers[len(layers) - min(unfreeze_last, len(layers)) :] if phase == 2 else []
    for _, m in opened:
        for p in m.parameters(recurse=False):
            p.requires_grad = True
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {
        "phase": phase,
        "unfrozen_layers": len(opened),
        "backbone_layers": len(layers),
        "trainable_params": trainable,
    }


def train_mode(model: nn.Module) -> None:
    """``model.train()``, except frozen BatchNorm layers stay in eval mode.

    ``requires_grad=False`` alone would still update their running statistics (the Keras
    fine-tuning guidance is to keep them in inference mode).
    """
    model.train()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            params = list(m.parameters(recurse=False))
            if params and not any(p.requires_grad for p in params):
                m.eval()


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


MODEL_FORMAT = "colecionador.model/1"


def export_model(module: nn.Module, hp: Any, classes: list[str]) -> dict[str, Any]:
    """model.pt: the weights and what it takes to rebuild and feed the model."""
    from training.augment import IMAGENET_MEAN, IMAGENET_STD

    return {
        "format": MODEL_FORMAT,
        "backbone": hp.backbone,
        "num_classes": len(classes),
        "classes": list(classes),
        "image_size": hp.image_size,
        "dropout": hp.dropout,
        "normalize": {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)},
        "hyperparameters": hp.effective(),
        "state_dict": {k: v.detach().cpu() for k, v in _unwrap(module).state_dict().items()},
    }


def load_model(package: dict[str, Any] | str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model from model.pt (a path or the loaded dict); returns (model, package)."""
    if not isinstance(package, dict):
        package = cast(  # model.pt: the dict that package() makes
            dict[str, Any], torch.load(Path(package), map_location="cpu", weights_only=True)
        )
    if package.get("format") != MODEL_FORMAT:
        raise WeightsError(f"not a {MODEL_FORMAT} package")
    model = build_model(package["backbone"], package["num_classes"], package["dropout"])
    model.load_state_dict(package["state_dict"])
    model.eval()
    return model, package
