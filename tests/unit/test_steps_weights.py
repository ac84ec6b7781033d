"""The job's weights step: a weights name reads torchvision's cache under the home."""

import pytest
import torch
from torchvision import models as tvm

from services.config import Settings
from services.errors import StepFailed
from services.jobs.steps import load_weights
from training.hyperparams import Hyperparameters
from training.model import build_model, load_backbone_weights


def test_imagenet_weights_come_from_the_cache_under_the_home(tmp_path):
    settings = Settings(home=tmp_path / "home")
    cached = tmp_path / "home" / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    cached.parent.mkdir(parents=True)
    planted = tvm.resnet18(weights=None).state_dict()
    torch.save(planted, cached)
    for name in ("imagenet", "IMAGENET1K_V1", "ResNet18_Weights.IMAGENET1K_V1"):
        state = load_weights(Hyperparameters(backbone="resnet18", weights=name), 4, settings)
        assert all(torch.equal(state[k], planted[k]) for k in planted)
    model = build_model("resnet18", 4)
    assert load_backbone_weights(model, state)["skipped"] == ["fc.bias", "fc.weight"]


def test_a_weights_file_is_still_a_file(tmp_path):
    settings = Settings(home=tmp_path / "home")
    with pytest.raises(StepFailed, match="^weights: file not found: .*IMAGENET1K_V1.pt"):
        load_weights(Hyperparameters(weights=str(tmp_path / "IMAGENET1K_V1.pt")), 3, settings)
