import pytest
import torch
from torch import nn

from training.hyperparams import Hyperparameters
from training.model import (
    WeightsError,
    build_model,
    export_model,
    head_prefix,
    layers_with_params,
    load_backbone_weights,
    load_model,
    read_state_dict,
    set_phase,
    train_mode,
)


@pytest.mark.parametrize("backbone,head", [("mobilenet_v2", "classifier.1."), ("resnet18", "fc.1."),
                                           ("mobilenet_v3_small", "classifier.3.")])
def test_new_head_has_the_job_classes_and_dropout(backbone, head):
    m = build_model(backbone, 7, dropout=0.3)
    assert head_prefix(m) == head
    assert m(torch.zeros(2, 3, 32, 32)).shape == (2, 7)
    assert any(isinstance(x, nn.Dropout) and x.p == 0.3 for x in m.modules())


def trainable_layers(m):
    return [n for n, mod in layers_with_params(m)
            if any(p.requires_grad for p in mod.parameters(recurse=False))]


def test_phase1_trains_only_the_head_and_phase2_exactly_the_last_n_layers():
    m = build_model("mobilenet_v2", 4)
    layers = [n for n, _ in layers_with_params(m)]
    info = set_phase(m, 1, 50)
    assert trainable_layers(m) == [] and info["unfrozen_layers"] == 0
    assert all(p.requires_grad for n, p in m.named_parameters() if n.startswith("classifier.1."))
    info = set_phase(m, 2, 50)
    assert trainable_layers(m) == layers[-50:] and info["unfrozen_layers"] == 50
    head = sum(p.numel() for n, p in m.named_parameters() if n.startswith("classifier.1."))
    opened = sum(p.numel() for n, mod in layers_with_params(m)[-50:]
                 for p in mod.parameters(recurse=False))
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
    pkg = export_model(m, Hyperparameters(backbone="mobilenet_v3_small", image_size=32),
                       ["a", "b", "c"])
    torch.save(pkg, tmp_path / "model.pt")
    m2, meta = load_model(tmp_path / "model.pt")
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(m(x), m2(x)) and meta["classes"] == ["a", "b", "c"]
    # a model.pt is also accepted as backbone weights
    assert set(read_state_dict(tmp_path / "model.pt")) == set(m.state_dict())


def test_unknown_backbone():
    with pytest.raises(ValueError, match="unknown backbone"):
        build_model("not_a_net", 3)
