import time
import urllib.error

import pytest
import torch
from torch import nn
from torchvision import models as tvm
from torchvision.models import MobileNet_V2_Weights

from training.hyperparams import Hyperparameters
from training.model import (
    WeightsError,
    build_model,
    export_model,
    head_prefix,
    is_weights_name,
    layers_with_params,
    load_backbone_weights,
    load_model,
    load_named_weights,
    read_state_dict,
    resolve_weights,
    set_phase,
    train_mode,
    weights_file,
)


@pytest.mark.parametrize(
    "backbone,head",
    [
        ("mobilenet_v2", "classifier.1."),
        ("resnet18", "fc.1."),
        ("mobilenet_v3_small", "classifier.3."),
    ],
)
def test_new_head_has_the_job_classes_and_dropout(backbone, head):
    m = build_model(backbone, 7, dropout=0.3)
    assert head_prefix(m) == head
    assert m(torch.zeros(2, 3, 32, 32)).shape == (2, 7)
    assert any(isinstance(x, nn.Dropout) and x.p == 0.3 for x in m.modules())


def trainable_layers(m):
    return [
        n
        for n, mod in layers_with_params(m)
        if any(p.requires_grad for p in mod.parameters(recurse=False))
    ]


def test_phase1_trains_only_the_head_and_phase2_exactly_the_last_n_layers():
    m = build_model("mobilenet_v2", 4)
    layers = [n for n, _ in layers_with_params(m)]
    info = set_phase(m, 1, 50)
    assert trainable_layers(m) == [] and info["unfrozen_layers"] == 0
    assert all(p.requires_grad for n, p in m.named_parameters() if n.startswith("classifier.1."))
    info = set_phase(m, 2, 50)
    assert trainable_layers(m) == layers[-50:] and info["unfrozen_layers"] == 50
    head = sum(p.numel() for n, p in m.named_parameters() if n.startswith("classifier.1."))
    opened = sum(
        p.numel() for n, mod in layers_with_params(m)[-50:] for p in mod.parameters(recurse=False)
    )
    assert info["trainable_params"] == head + opened
    set_phase(m, 2, 10_000)
    assert trainable_layers(m) == layers


def test_frozen_batchnorm_stays_in_eval_mode():
    m = build_model("resnet18", 3)
    set_phase(m, 2, 3)
    train_mode(m)
    bns = [(n, x) for n, x in m.named_modules() if isinstance(x, nn.BatchNorm2d)]
    frozen = [n for n, x in bns if not x.weight.requires_grad]
    assert frozen and all(not x.training for n, x in bns if n in frozen)
    assert all(x.training for n, x in bns if n not in frozen)
    before = m.bn1.running_mean.clone()
    m(torch.randn(4, 3, 32, 32))
    assert torch.equal(before, m.bn1.running_mean)


def test_backbone_weights_load_and_the_head_stays_new(tmp_path):
    src = build_model("resnet18", 10)
    torch.save(src.state_dict(), tmp_path / "w.pt")
    dst = build_model("resnet18", 3)
    info = load_backbone_weights(dst, read_state_dict(tmp_path / "w.pt"))
    assert torch.equal(dst.layer4[1].conv2.weight, src.layer4[1].conv2.weight)
    assert dst.fc[1].weight.shape == (3, 512) and info["skipped"] == ["fc.1.bias", "fc.1.weight"]


def test_weights_that_do_not_fit_are_a_clear_error(tmp_path):
    torch.save(build_model("resnet18", 3).state_dict(), tmp_path / "r.pt")
    with pytest.raises(WeightsError, match="missing"):
        load_backbone_weights(build_model("mobilenet_v2", 3), read_state_dict(tmp_path / "r.pt"))
    with pytest.raises(WeightsError, match="not found"):
        read_state_dict(tmp_path / "nope.pt")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(WeightsError, match="cannot read"):
        read_state_dict(tmp_path / "junk.pt")


def test_export_and_load_round_trip(tmp_path):
    m = build_model("mobilenet_v3_small", 3).eval()
    pkg = export_model(
        m, Hyperparameters(backbone="mobilenet_v3_small", image_size=32), ["a", "b", "c"]
    )
    torch.save(pkg, tmp_path / "model.pt")
    m2, meta = load_model(tmp_path / "model.pt")
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(m(x), m2(x)) and meta["classes"] == ["a", "b", "c"]
    # a model.pt is also accepted as backbone weights
    assert set(read_state_dict(tmp_path / "model.pt")) == set(m.state_dict())


def test_unknown_backbone():
    with pytest.raises(ValueError, match="unknown backbone"):
        build_model("not_a_net", 3)


# ----------------------------------------------------------------- weights by name
@pytest.mark.parametrize(
    "value, expected",
    [
        ("imagenet", True),
        ("ImageNet", True),
        ("IMAGENET1K_V2", True),
        ("DEFAULT", True),
        ("MobileNet_V2_Weights.IMAGENET1K_V2", True),
        ("weights.pt", False),
        ("/tmp/IMAGENET1K_V1", False),
        ("s3://bucket/w.pt", False),
        ("resnet.pth", False),
    ],
)
def test_weights_names_and_files_are_told_apart(value, expected):
    assert is_weights_name(value) is expected


@pytest.mark.parametrize(
    "name, member",
    [
        ("imagenet", "IMAGENET1K_V2"),
        ("DEFAULT", "IMAGENET1K_V2"),
        ("IMAGENET1K_V1", "IMAGENET1K_V1"),
        ("MobileNet_V2_Weights.IMAGENET1K_V1", "IMAGENET1K_V1"),
    ],
)
def test_weights_names_resolve_to_torchvisions_enum(name, member):
    assert resolve_weights("mobilenet_v2", name) is MobileNet_V2_Weights[member]


def test_an_unknown_weights_name_lists_the_valid_ones():
    with pytest.raises(
        WeightsError,
        match="unknown weights 'IMAGENET9' for mobilenet_v2; "
        "valid names: imagenet, IMAGENET1K_V1, IMAGENET1K_V2, DEFAULT",
    ):
        resolve_weights("mobilenet_v2", "IMAGENET9")
    with pytest.raises(WeightsError, match="not weights of mobilenet_v2 .*valid names"):
        resolve_weights("mobilenet_v2", "ResNet18_Weights.IMAGENET1K_V1")


def test_named_weights_load_from_the_cache(tmp_path):
    """torchvision's own loader reads the file it expects under <torch home>/hub/checkpoints:
    a state dict planted there (a fresh model's) is what the backbone gets."""
    weights = MobileNet_V2_Weights.DEFAULT
    path = weights_file(weights, tmp_path)
    assert path == tmp_path / "hub" / "checkpoints" / "mobilenet_v2-7ebf99e0.pth"
    path.parent.mkdir(parents=True)
    planted = tvm.mobilenet_v2(weights=None).state_dict()
    torch.save(planted, path)

    state = load_named_weights("mobilenet_v2", "imagenet", tmp_path)
    assert state.keys() == planted.keys()
    assert all(torch.equal(state[k], planted[k]) for k in planted)
    model = build_model("mobilenet_v2", 3)
    report = load_backbone_weights(model, state)
    assert report["skipped"] == ["classifier.1.bias", "classifier.1.weight"]  # the 1000 classes
    own = model.state_dict()
    assert all(torch.equal(own[k], planted[k]) for k in planted if not k.startswith("classifier"))


def test_named_weights_offline_and_not_cached_say_which_file_to_put_where(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torch.hub, "urlopen", offline)  # as offline, on any machine
    t0 = time.perf_counter()
    with pytest.raises(WeightsError) as err:
        load_named_weights("mobilenet_v2", "imagenet", tmp_path)
    assert time.perf_counter() - t0 < 5
    folder = tmp_path / "hub" / "checkpoints"
    assert str(err.value) == (
        "imagenet weights for mobilenet_v2 (MobileNet_V2_Weights.IMAGENET1K_V2) are not "
        "cached and cannot be downloaded (Name or service not known): "
        f"put mobilenet_v2-7ebf99e0.pth in {folder}"
    )
    assert "\n" not in str(err.value)
    assert not any(folder.glob("*"))  # no partial file left behind
