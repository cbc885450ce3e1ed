"""fer_core.explain.featviz: optimised images excite their own filter, batched over filters; layer
outputs; top-k faces; the model is left as found."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from fer_core.explain import featviz as fv
from fer_core.explain.guard import model_guard
from fer_core.explain.prefix import compiled_prefix, conv_mean, own_channel_conv, run_to
from fer_core.models import create_model
from fer_core.preprocess import Preprocess

PRE = Preprocess(size=48, mean=0.5, std=0.25, normalize=True)
LAYER = "features.conv2"


@pytest.fixture(scope="module")
def model() -> nn.Module:
    torch.manual_seed(0)
    return create_model("cnn4", channels=(8, 8, 8, 8), fc=16).eval()


def _state(m: nn.Module) -> tuple:
    hooks = sum(len(mod._forward_hooks) + len(mod._forward_pre_hooks) + len(mod._backward_hooks)
                for mod in m.modules())
    return [mod.training for mod in m.modules()], [p.grad for p in m.parameters()], hooks


@pytest.mark.parametrize("mode", fv.MODES)
def test_optimised_image_excites_its_own_filter(model: nn.Module, mode: str) -> None:
    res = fv.visualize_filters(model, LAYER, mode=mode, steps=24, preprocess=PRE, seed=0)
    n = len(res.filters)
    assert n == 8 and res.images.shape == res.pixels.shape == (8, 48, 48)
    assert res.images.min() >= 0 and res.images.max() <= 1
    M = fv.activation_matrix(model, LAYER, res.pixels, res.filters, PRE)     # image i × filter j
    np.testing.assert_allclose(np.diag(M), res.activations, rtol=1e-4, atol=1e-5)
    rand = fv.activation_matrix(model, LAYER, np.random.default_rng(0).random((8, 48, 48)), res.filters, PRE)
    own = np.diag(M)
    others = (M.sum(0) - own) / (n - 1)        # filter j on the images optimised for other filters
    assert (own > rand.mean(0)).mean() >= 0.75, (own, rand.mean(0))
    assert (own > others).mean() >= 0.75, (own, others)
    assert own.mean() > others.mean() and own.mean() > rand.mean()


def test_subset_of_filters_and_non_conv_layer(model: nn.Module) -> None:
    res = fv.visualize_filters(model, LAYER, filters=[5, 2], mode="naive", steps=3, preprocess=PRE)
    assert list(res.filters) == [5, 2] and res.pixels.shape == (2, 48, 48)
    act = fv.visualize_filters(model, "features.act2", filters=[1], mode="regularized", steps=3)  # fallback path
    assert act.pixels.shape == (1, 48, 48) and np.isfinite(act.activations).all()
    with pytest.raises(ValueError, match="0..7"):
        fv.visualize_filters(model, LAYER, filters=[8], steps=1)
    with pytest.raises(ValueError, match="no layer"):
        fv.visualize_filters(model, "features.nope", steps=1)


def test_own_channel_conv_matches_the_full_layer(model: nn.Module) -> None:
    x = PRE(torch.randint(0, 256, (4, 48, 48), dtype=torch.uint8))
    filt = torch.tensor([3, 0, 7, 3])
    for layer in ("features.conv1", LAYER):
        inp = run_to(model, layer, x, inputs=True)
        own = own_channel_conv(model.get_submodule(layer), inp, filt)
        full = run_to(model, layer, x)[torch.arange(4), filt]
        torch.testing.assert_close(own, full, rtol=1e-5, atol=1e-5)


def _random_bn(m: nn.Module) -> nn.Module:
    """Non-trivial running statistics and affine BN parameters (a fresh model's BN is the identity)."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for bn in m.modules():
            if isinstance(bn, nn.BatchNorm2d):
                c = bn.num_features
                bn.running_mean.copy_(torch.randn(c, generator=g) * 0.2)
                bn.running_var.copy_(torch.rand(c, generator=g) + 0.5)
                bn.weight.copy_(torch.randn(c, generator=g) * 0.5 + 1)   # some negative scales
                bn.bias.copy_(torch.randn(c, generator=g) * 0.2)
    return m


@pytest.mark.parametrize("name, kw, layers", [
    ("cnn4", {"channels": (8, 8, 8, 8), "fc": 16}, ("features.conv1", LAYER, "features.conv3")),
    ("cnn3", {"channels": (8, 8, 8)}, ("features.conv2", "features.conv3")),
    ("vgg", {"width": (4, 4, 4, 4), "fc": 8}, ("features.stage1.conv2", "features.stage2.conv1")),
])
def test_fast_objective_matches_the_model(name: str, kw: dict, layers: tuple) -> None:
    """The compiled prefix (fx: BN fused into the conv, max-pool before the activation, channels-last)
    plus the conv-mean shortcut give the model's own objective and gradient."""
    torch.manual_seed(0)
    m = _random_bn(create_model(name, **kw).eval())
    x = PRE(torch.randint(0, 256, (4, 48, 48), dtype=torch.uint8)).requires_grad_(True)
    filt = torch.tensor([3, 0, 2, 3])
    with model_guard(m):
        for layer in layers:
            conv = m.get_submodule(layer)
            prefix = compiled_prefix(m, layer, x.detach()[:2])
            assert prefix is not None, layer
            ref = own_channel_conv(conv, run_to(m, layer, x, inputs=True), filt).flatten(1).mean(1)
            (g_ref,) = torch.autograd.grad(ref.sum(), x)
            got = conv_mean(conv, prefix(x), filt)
            (g_got,) = torch.autograd.grad(got.sum(), x)
            torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(g_got, g_ref, rtol=1e-4, atol=1e-6 * float(g_ref.abs().max()))


def test_prefix_is_the_traced_forward_and_falls_back_when_untraceable() -> None:
    class Inverted(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                          nn.Conv2d(4, 4, 3, padding=1))
            self.feature_layers, self.input_size = ("features.3",), 48

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.features(1.0 - x)          # the chain alone is a different function

    class Branching(Inverted):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.features(x if x.mean() > 0.5 else 1.0 - x)   # data-dependent: not fx-traceable

    torch.manual_seed(0)
    probe = torch.rand(2, 1, 48, 48)
    m = Inverted().eval()
    with model_guard(m):
        prefix = compiled_prefix(m, "features.3", probe)
        assert prefix is not None                  # the forward's own `1 - x` is part of the prefix
        x = torch.rand(3, 1, 48, 48)
        torch.testing.assert_close(prefix(x), run_to(m, "features.3", x, inputs=True))
    b = Branching().eval()
    b.load_state_dict(m.state_dict())
    with model_guard(b):
        assert compiled_prefix(b, "features.3", probe) is None
    for model in (m, b):
        res = fv.visualize_filters(model, "features.3", mode="naive", steps=3)
        M = fv.activation_matrix(model, "features.3", res.pixels, res.filters)
        np.testing.assert_allclose(np.diag(M), res.activations, rtol=1e-4, atol=1e-5)


def test_chunked_step_equals_one_pass(model: nn.Module, monkeypatch: pytest.MonkeyPatch) -> None:
    """The model runs CHUNK images at a time inside a step; the result does not depend on CHUNK."""
    runs = {}
    for chunk in (3, 100):
        monkeypatch.setattr(fv, "CHUNK", chunk)
        runs[chunk] = fv.visualize_filters(model, LAYER, mode="regularized", steps=4, preprocess=PRE, l2=0.1)
    np.testing.assert_allclose(runs[3].pixels, runs[100].pixels, rtol=0, atol=1e-5)
    np.testing.assert_allclose(runs[3].activations, runs[100].activations, rtol=1e-5, atol=1e-6)


def test_model_left_as_found_also_on_error(model: nn.Module) -> None:
    model.train()
    model.features.bn1.eval()
    before = _state(model)
    fv.visualize_filters(model, LAYER, steps=2, filters=[0, 1])
    fv.filter_activations(model, LAYER, PRE(torch.zeros(1, 48, 48, dtype=torch.uint8)))
    with pytest.raises(ValueError):
        fv.visualize_filters(model, LAYER, filters=[-1], steps=1)
    after = _state(model)
    assert after[0] == before[0] and after[2] == before[2] == 0
    assert all(a is b for a, b in zip(after[1], before[1]))
    model.eval()


def test_filter_activations_and_top_faces(model: nn.Module) -> None:
    g = torch.Generator().manual_seed(3)
    faces = torch.randint(0, 256, (30, 48, 48), generator=g, dtype=torch.uint8)
    acts = fv.filter_activations(model, LAYER, PRE(faces[:1])[0])          # one face: 1×H×W
    assert acts.shape == (8, 24, 24)
    batch = fv.filter_activations(model, LAYER, PRE(faces[:3]))
    np.testing.assert_allclose(batch[0], acts, rtol=1e-5, atol=1e-6)
    top = fv.top_activating(model, LAYER, faces, PRE, filters=[1, 4], k=3, batch_size=7)
    scores = fv.filter_activations(model, LAYER, PRE(faces)).reshape(30, 8, -1).max(2)
    for r, f in enumerate([1, 4]):
        expect = np.argsort(-scores[:, f])[:3]
        assert list(top.index[r]) == list(expect)
        np.testing.assert_allclose(top.score[r], scores[expect, f], rtol=1e-5)
    assert top.maps.shape == (2, 3, 48, 48) and top.maps.min() >= 0 and top.maps.max() <= 1
    r, c = top.peak[0, 0]
    assert top.maps[0, 0, r, c] == pytest.approx(1.0)


def test_layers_weights_and_filter_parsing(model: nn.Module) -> None:
    rows = fv.feature_layer_table(model)
    assert [(r.name, r.channels, r.height) for r in rows] == [
        ("features.conv1", 8, 48), ("features.conv2", 8, 24), ("features.conv3", 8, 12), ("features.conv4", 8, 6)]
    assert fv.filter_weights(model, "features.conv1").shape == (8, 5, 5)
    assert fv.filter_weights(model, LAYER) is None
    assert fv.parse_filters("0-2, 5,5", 8) == [0, 1, 2, 5]
    assert fv.parse_filters("all", 3) == [0, 1, 2]
    for bad, msg in (("9", "outside"), ("3-1", "backwards"), ("x", "not a filter")):
        with pytest.raises(ValueError, match=msg):
            fv.parse_filters(bad, 8)
