"""Model zoo contract: every registered builder, the layer table's size formula, the torchvision
adapters' offline behaviour. Each model is built once per module (wide_resnet50_2 is 67M
parameters) and no test touches the network."""

from __future__ import annotations

import urllib.error

import pytest
import torch
import torch.nn as nn
import torchvision.models as tvm

from fer_core.models import create_model, list_models
from fer_core.models import tv
from fer_core.models.summary import LayerRow, format_table, summarize, total_params

EXPECTED = {"cnn3", "cnn4", "alexnet_bn", "vgg", "resnet18", "wide_resnet50_2"}


@pytest.fixture(scope="module")
def models() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    return {name: create_model(name) for name in list_models()}


def test_registered_names():
    assert EXPECTED <= set(list_models())


def test_forward_shape(models):
    x = torch.randn(2, 1, 48, 48)
    for name, m in models.items():
        m.eval()
        with torch.no_grad():
            y = m(x)
        assert y.shape == (2, 7), name
        assert torch.isfinite(y).all(), name


def test_train_mode_forward_backward_small_models(models):
    x = torch.randn(2, 1, 48, 48)
    for name in ("cnn3", "cnn4", "alexnet_bn", "vgg"):
        m = models[name].train()
        m(x).sum().backward()
        assert any(p.grad is not None for p in m.parameters()), name
        m.zero_grad(set_to_none=True)


def test_unknown_name_lists_valid_and_suggests():
    with pytest.raises(ValueError) as e:
        create_model("resnet81")
    msg = str(e.value)
    assert "Did you mean" in msg and "resnet18" in msg
    for name in EXPECTED:
        assert name in msg
    with pytest.raises(ValueError, match="cnn4"):
        create_model("cnn5")


def test_layer_names_resolve(models):
    for name, m in models.items():
        assert m.input_size == 48, name
        m.get_submodule(m.gradcam_layer)
        assert len(m.feature_layers) >= 3, name
        for layer in m.feature_layers:
            assert isinstance(m.get_submodule(layer), nn.Conv2d), (name, layer)


def test_resnet_exposes_layer3_and_layer4(models):
    for name in ("resnet18", "wide_resnet50_2"):
        m = models[name]
        assert m.gradcam_layer == "layer3"
        assert m.feature_layers[0] == "conv1"
        assert any(f.startswith("layer3.") for f in m.feature_layers)
        assert any(f.startswith("layer4.") for f in m.feature_layers)


def test_summary_formula_agrees_everywhere(models):
    for name, m in models.items():
        m.train()
        rows = summarize(m)
        checked = [r for r in rows if r.ok is not None]
        assert checked, name
        bad = [(r.name, r.formula, r.output_shape) for r in checked if not r.ok]
        assert not bad, (name, bad)
        assert all(mod.training for mod in m.modules()), f"{name}: train mode not restored"
        assert sum(r.params for r in rows) == total_params(m), name
        for r in rows:
            if isinstance(m.get_submodule(r.name), (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
                assert r.formula and r.formula.endswith(f"= {r.output_shape[-1]}"), (name, r)


def test_summary_restores_eval_and_removes_hooks(models):
    m = models["cnn3"].eval()
    summarize(m)
    assert not any(mod.training for mod in m.modules())
    assert all(not mod._forward_hooks for mod in m.modules())


def test_cnn4_shapes_and_table(models):
    rows = summarize(models["cnn4"])
    by_name = {r.name: r for r in rows}
    assert by_name["features.conv1"].output_shape == (32, 48, 48)
    assert [by_name[f"features.pool{i}"].output_shape[1:] for i in range(1, 5)] == [(24, 24), (12, 12), (6, 6), (3, 3)]
    assert by_name["features.conv1"].formula == "⌊(48 + 2·2 − 5)/1⌋ + 1 = 48"
    assert by_name["classifier.fc1"].input_shape == (3 * 3 * 128,)
    text = format_table(rows)
    assert "features.conv1" in text and "Total params: 538,087" in text and "8/8 agree" in text


def test_summary_by_name_and_unusual_layers():
    rows = summarize("vgg", width=(8, 8, 8, 8), fc=16)
    assert rows[0].name == "features.stage1.conv1"
    net = nn.Sequential(
        nn.Conv2d(1, 2, kernel_size=3, dilation=2, padding=1),       # 48 -> 46
        nn.MaxPool2d(3, stride=2, ceil_mode=True),                   # 46 -> 23
        nn.AvgPool2d(2, ceil_mode=True),                             # 23 -> 12
        nn.Conv2d(2, 2, kernel_size=(3, 1), stride=(2, 1)),           # 12x12 -> 5x12
        nn.Conv2d(2, 2, kernel_size=3, padding="same"),
    )
    rows = summarize(net)
    assert [r.ok for r in rows] == [True] * 5
    assert [r.output_shape for r in rows] == [(2, 46, 46), (2, 23, 23), (2, 12, 12), (2, 5, 12), (2, 5, 12)]
    assert rows[0].formula == "⌊(48 + 2·1 − 2·(3−1) − 1)/1⌋ + 1 = 46"
    assert rows[1].formula.startswith("⌈")
    assert rows[3].formula.startswith("H: ")
    assert isinstance(rows[0], LayerRow)


def test_vgg_reference_point_expressible():
    ref = create_model("vgg", width=(32, 64, 128, 256), fc=256)
    assert 1.75e6 < total_params(ref) < 1.9e6
    assert ref.get_submodule("features.stage4.conv2").out_channels == 256
    assert ref.get_submodule("classifier.fc1").out_features == 256
    one = create_model("vgg", width=(32, 64, 128, 256), fc=256, fc_layers=1)
    assert 1.75e6 < total_params(one) < total_params(ref)
    assert one(torch.zeros(2, 1, 48, 48)).shape == (2, 7)


def test_kwargs_and_bad_values():
    assert create_model("cnn4", channels=(8, 8, 16, 16), fc=32)(torch.zeros(2, 1, 48, 48)).shape == (2, 7)
    assert create_model("cnn3", num_classes=3, in_chans=3)(torch.zeros(2, 3, 48, 48)).shape == (2, 3)
    assert create_model("alexnet_bn", channels=(8, 8, 8, 8, 8), fc=16).eval()(torch.zeros(1, 1, 48, 48)).shape == (1, 7)
    with pytest.raises(ValueError, match="channels needs 4"):
        create_model("cnn4", channels=(8, 8))
    with pytest.raises(TypeError):
        create_model("cnn4", nope=1)
    with pytest.raises(ValueError, match="stem"):
        create_model("resnet18", stem="tiny")


def test_small_stem_resnet():
    m = create_model("resnet18", stem="small")
    assert m.gradcam_layer == "layer4"
    rows = {r.name: r for r in summarize(m)}
    assert rows["layer4.1.conv2"].output_shape == (512, 6, 6)
    assert all(r.ok for r in rows.values() if r.ok is not None)


# ---------------------------------------------------------------- pretrained, offline
def _forbid_download(monkeypatch):
    def boom(self, *a, **kw):
        raise AssertionError("pretrained=False must not download")

    monkeypatch.setattr(tvm.ResNet18_Weights, "get_state_dict", boom)
    monkeypatch.setattr(tvm.Wide_ResNet50_2_Weights, "get_state_dict", boom)


def test_no_download_when_not_pretrained(monkeypatch):
    _forbid_download(monkeypatch)
    create_model("resnet18")


@pytest.mark.parametrize("name, enum", [("resnet18", tvm.ResNet18_Weights),
                                        ("wide_resnet50_2", tvm.Wide_ResNet50_2_Weights)])
def test_offline_pretrained_error(monkeypatch, name, enum):
    # The weights are fetched before the (large) net is built, so this never builds wide_resnet50_2.
    def offline(self, *a, **kw):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(enum, "get_state_dict", offline)
    with pytest.raises(RuntimeError) as e:
        create_model(name, pretrained=True)
    msg = str(e.value)
    assert "could not download" in msg and "pretrained=False" in msg
    assert "Temporary failure in name resolution" in msg
    assert isinstance(e.value.__cause__, urllib.error.URLError)


def test_pretrained_folds_conv1(monkeypatch):
    torch.manual_seed(1)
    fake = tvm.resnet18().state_dict()  # 3-channel conv1, 1000-way fc, random values: no network
    monkeypatch.setattr(tvm.ResNet18_Weights, "get_state_dict", lambda self, *a, **kw: fake)
    m = create_model("resnet18", pretrained=True)
    assert m.conv1.weight.shape == (64, 1, 7, 7)
    torch.testing.assert_close(m.conv1.weight, fake["conv1.weight"].sum(1, keepdim=True))
    torch.testing.assert_close(m.layer2[0].conv1.weight, fake["layer2.0.conv1.weight"])
    assert m.fc.out_features == 7
    # A gray image replicated to RGB gives the same conv1 response as the folded 1-channel filter.
    x = torch.randn(1, 1, 48, 48)
    rgb = nn.functional.conv2d(x.expand(1, 3, 48, 48), fake["conv1.weight"], stride=2, padding=3)
    torch.testing.assert_close(m.conv1(x), rgb, rtol=1e-4, atol=1e-4)

    with pytest.warns(UserWarning, match="small"):
        small = create_model("resnet18", pretrained=True, stem="small")
    torch.testing.assert_close(small.layer1[0].conv1.weight, fake["layer1.0.conv1.weight"])


def test_fold_conv_weight():
    w = torch.randn(4, 3, 3, 3)
    torch.testing.assert_close(tv.fold_conv_weight(w, 1), w.sum(1, keepdim=True))
    torch.testing.assert_close(tv.fold_conv_weight(w, 3), w)
    w4 = tv.fold_conv_weight(w, 4)
    assert w4.shape == (4, 4, 3, 3)
    torch.testing.assert_close(w4, torch.cat([w, w[:, :1]], 1) * 0.75)  # tiled R,G,B,R, scaled 3/4
    sd = tv.adapt_pretrained_state_dict({"conv1.weight": w, "fc.weight": torch.zeros(1000, 4),
                                         "fc.bias": torch.zeros(1000), "bn1.weight": torch.ones(4)}, 1, "stock")
    assert set(sd) == {"conv1.weight", "bn1.weight"} and sd["conv1.weight"].shape == (4, 1, 3, 3)


def test_vgg_stem_stride_downsamples_in_the_first_conv():
    """stem_stride=2: same parameters and layer names, stage 1 ends at 24×24 with no pool, same head."""
    plain = create_model("vgg", width=(8, 16, 16, 16), fc=16, fc_layers=1)
    fast = create_model("vgg", width=(8, 16, 16, 16), fc=16, fc_layers=1, stem_stride=2)
    assert {k: v.shape for k, v in plain.state_dict().items()} == {k: v.shape for k, v in fast.state_dict().items()}
    x = torch.zeros(2, 1, 48, 48)
    assert fast.features.stage1(x).shape == (2, 8, 24, 24) == plain.features.stage1(x).shape
    assert fast.get_submodule("features.stage1.conv1").stride == (2, 2)
    assert not hasattr(fast.features.stage1, "pool") and hasattr(plain.features.stage1, "pool")
    assert fast(x).shape == (2, 7)
    with pytest.raises(ValueError, match="stem_stride"):
        create_model("vgg", stem_stride=3)
