"""fer_core.explain.attribution: exact maps on hand-weighted models, batching, and the guarantees
(model mode, parameter grads, input requires_grad, no hooks left -- also when it raises)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from fer_core.explain.attribution import (METHODS, cell_mean_maps, explain, explain_contrastive, layer_table,
                                          make_baseline, method_notes, resolve_target)
from fer_core.explain.colour import color_limits, colorize, heat_overlay
from fer_core.explain.sanity import randomize_top, sanity_check, spearman
from fer_core.preprocess import Preprocess

S = 8  # side of the tiny models' input
PRE = Preprocess(size=S, mean=0.5, std=0.25, normalize=True)


class Linear(nn.Module):
    """logits = W · vec(x) + b with known W: saliency is |W[target]| reshaped, exactly."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(S * S, 3)
        with torch.no_grad():
            w = torch.arange(3 * S * S, dtype=torch.float32).view(3, S * S)
            self.fc.weight.copy_(torch.sin(w) * (1 + w / 50))   # signed, all distinct
            self.fc.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))

    def w(self, t: int) -> np.ndarray:
        return self.fc.weight.detach()[t].view(S, S).numpy()


class TinyConv(nn.Module):
    """conv(1→2, 1×1, no bias) → GAP → linear(2→3): Grad-CAM has a closed form."""

    gradcam_layer = "conv"
    feature_layers = ("conv",)
    input_size = S

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1, bias=False)
        self.fc = nn.Linear(2, 3, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([1.5, -0.5]).view(2, 1, 1, 1))
            self.fc.weight.copy_(torch.tensor([[1.0, 0.0], [0.5, 2.0], [-1.0, 1.0]]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).mean((2, 3)))


class Mixed(nn.Module):
    """Conv/BN/ReLU/dropout/pool net to check modes, grads and hooks; ``boom`` raises mid-forward."""

    gradcam_layer = "relu2"
    feature_layers = ("conv1", "conv2")
    input_size = S

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1, self.bn1, self.relu1 = nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU()
        self.conv2, self.relu2 = nn.Conv2d(4, 4, 3, padding=1), nn.ReLU()
        self.pool, self.drop, self.fc = nn.MaxPool2d(2), nn.Dropout(0.5), nn.Linear(4 * (S // 2) ** 2, 3)
        self.boom = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.relu2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        if self.boom:
            raise RuntimeError("boom")
        return self.fc(self.drop(self.pool(h)).flatten(1))


def faces(n: int = 4, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return PRE(torch.randint(0, 256, (n, S, S), generator=g, dtype=torch.uint8))


# --------------------------------------------------------------------------- exact maps
def test_saliency_of_linear_model_is_abs_weight_per_target() -> None:
    m, x = Linear(), faces(3)
    maps = explain(m, x, [0, 2, 1], "saliency")
    assert maps.shape == (3, S, S) and maps.dtype == np.float32
    for i, t in enumerate([0, 2, 1]):
        np.testing.assert_allclose(maps[i], np.abs(m.w(t)), rtol=1e-6)
    single = explain(m, x[0], 1, "saliency")          # one face -> H×W
    assert single.shape == (S, S)
    np.testing.assert_allclose(single, np.abs(m.w(1)), rtol=1e-6)


def test_integrated_gradients_black_baseline_is_black_pixels_after_preprocessing() -> None:
    m, x = Linear(), faces(2)
    maps = explain(m, x, 2, "integrated_gradients", preprocess=PRE, baseline="black", n_steps=8)
    black = (0.0 - PRE.mean) / PRE.std                # -2, not 0
    for i in range(2):
        np.testing.assert_allclose(maps[i], (x[i, 0].numpy() - black) * m.w(2), rtol=1e-4, atol=1e-5)
    base = make_baseline(x, "black", PRE)
    assert torch.allclose(base, torch.full_like(x, black))
    with pytest.raises(ValueError, match="preprocess"):
        explain(m, x, 0, "integrated_gradients", baseline="black")


def test_integrated_gradients_mean_and_blurred_baselines() -> None:
    m, x = Linear(), faces(2)
    mean_face = np.full((S, S), 0.25, np.float32)
    maps = explain(m, x, 0, "integrated_gradients", preprocess=PRE, baseline="mean", mean_face=mean_face, n_steps=4)
    np.testing.assert_allclose(maps[0], (x[0, 0].numpy() - (0.25 - 0.5) / 0.25) * m.w(0), rtol=1e-4, atol=1e-5)
    blurred = make_baseline(x, "blurred", PRE, blur_sigma=1.0)
    assert blurred.shape == x.shape and blurred.std() < x.std()
    maps = explain(m, x, 0, "integrated_gradients", preprocess=PRE, baseline="blurred", blur_sigma=1.0, n_steps=4)
    np.testing.assert_allclose(maps, (x[:, 0] - blurred[:, 0]).numpy() * m.w(0), rtol=1e-4, atol=1e-5)


def test_smoothgrad_guided_backprop_and_occlusion_on_linear_model() -> None:
    m, x = Linear(), faces(2)
    sg = explain(m, x, 1, "smoothgrad", preprocess=PRE, nt_samples=4, noise=0.2)
    np.testing.assert_allclose(sg, np.stack([np.abs(m.w(1))] * 2), rtol=1e-5)   # constant gradient
    gb = explain(m, x, 1, "guided_backprop")
    np.testing.assert_allclose(gb, np.stack([m.w(1)] * 2), rtol=1e-6)           # no ReLU: signed gradient
    occ = explain(m, x, 2, "occlusion", preprocess=PRE, baseline="black", window=1, stride=1)
    np.testing.assert_allclose(occ, (x[:, 0].numpy() + 2.0) * m.w(2), rtol=1e-4, atol=1e-5)


def test_gradcam_closed_form_and_layer_choice() -> None:
    m, x = TinyConv(), faces(3)
    cam = explain(m, x, [0, 1, 2], "gradcam")
    w, v = torch.tensor([1.5, -0.5]), m.fc.weight.detach()
    for i, t in enumerate([0, 1, 2]):
        expect = torch.relu(sum(v[t, k] / (S * S) * w[k] * x[i, 0] for k in range(2)))
        np.testing.assert_allclose(cam[i], expect.numpy(), rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="no layer"):
        explain(m, x, 0, "gradcam", layer="nope")


def test_pred_target_contrastive_and_batch_equals_singles() -> None:
    m, x = Mixed().eval(), faces(5)
    preds = m(x).argmax(1)
    assert torch.equal(resolve_target(m, x, "pred"), preds)
    for method in ("saliency", "gradcam", "occlusion", "guided_backprop"):
        batch = explain(m, x, "pred", method, preprocess=PRE)
        singles = np.stack([explain(m, x[i], int(preds[i]), method, preprocess=PRE) for i in range(len(x))])
        np.testing.assert_allclose(batch, singles, rtol=1e-4, atol=1e-6, err_msg=method)
    a, b = explain_contrastive(m, x, "pred", [1] * 5, "saliency")
    np.testing.assert_allclose(a, explain(m, x, "pred", "saliency"), rtol=1e-6)
    np.testing.assert_allclose(b, explain(m, x, 1, "saliency"), rtol=1e-6)


def test_bad_method_and_option_names() -> None:
    m, x = Linear(), faces(1)
    with pytest.raises(ValueError, match="saliency"):
        explain(m, x, 0, "lime")
    with pytest.raises(TypeError, match="n_steps"):
        explain(m, x, 0, "saliency", n_steps=3)
    with pytest.raises(ValueError, match="targets"):
        explain(m, x, [0, 1], "saliency")


# --------------------------------------------------------------------------- guarantees
def _hooks(model: nn.Module) -> int:
    return sum(len(getattr(mod, d)) for mod in model.modules()
               for d in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
               if hasattr(mod, d))


def _state(model: nn.Module) -> tuple:
    return ([mod.training for mod in model.modules()], [p.grad for p in model.parameters()], _hooks(model))


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("fail", [None, "target", "forward"])
def test_model_and_input_left_as_found(method: str, fail: str | None) -> None:
    m = Mixed().train()
    m.bn1.eval()                                            # mixed modes must survive as they are
    m.conv1.weight.grad = torch.ones_like(m.conv1.weight)   # an existing grad stays the same object
    grad_obj = m.conv1.weight.grad
    user = m.relu1.register_forward_hook(lambda *a: None)   # the caller's own hook stays
    before = _state(m)
    x = faces(2)
    x_rg = x.clone().requires_grad_(True)
    target = 99 if fail == "target" else [0, 2]
    m.boom = fail == "forward"
    for inp in (x, x_rg):
        if fail:
            with pytest.raises(Exception):
                explain(m, inp, target, method, preprocess=PRE)
        else:
            out = explain(m, inp, target, method, preprocess=PRE)
            assert out.shape == (2, S, S) and np.isfinite(out).all()
        after = _state(m)
        assert after[0] == before[0], "train/eval flags changed"
        assert all(a is b for a, b in zip(after[1], before[1])), "parameter .grad changed"
        assert m.conv1.weight.grad is grad_obj and m.conv2.weight.grad is None
        assert after[2] == before[2] == 1, "hooks left behind"
    assert not x.requires_grad and x.grad is None
    assert x_rg.requires_grad and x_rg.grad is None
    user.remove()


def test_works_inside_no_grad_and_inference_mode() -> None:
    m, x = Linear(), faces(2)
    with torch.no_grad():
        a = explain(m, x, 0, "saliency")
    with torch.inference_mode():
        xi = faces(2)
        b = explain(m, xi, 0, "saliency")
    np.testing.assert_allclose(a, b)


# --------------------------------------------------------------------------- layers, colours, cells, sanity
def test_layer_table_sizes_and_coarse_warning() -> None:
    from fer_core.models import create_model

    m = create_model("cnn4", channels=(4, 4, 4, 4), fc=8)
    rows = {r.name: r for r in layer_table(m)}
    assert (rows["features.act4"].height, rows["features.act4"].coarse) == (6, False)
    assert rows["features.pool4"].coarse and "3×3" in rows["features.pool4"].note
    assert rows["features.conv1"].channels == 4 and rows["features.conv1"].height == 48
    assert method_notes(m, "gradcam", layer="features.pool4") == [rows["features.pool4"].note]
    assert method_notes(m, "gradcam") == []
    assert "LeakyReLU" in method_notes(m, "guided_backprop")[0]
    assert method_notes(Mixed(), "guided_backprop") == []


def test_color_limits_and_colorize() -> None:
    maps = np.stack([np.full((2, 2), 1.0), np.array([[-3.0, 0.0], [1.0, 2.0]])])
    per = color_limits(maps, shared=False, signed=True)
    np.testing.assert_allclose(per[1], [-3, 3])
    shared = color_limits(maps, shared=True, signed=False)
    np.testing.assert_allclose(shared, [[-3, 2], [-3, 2]])
    assert per[0, 1] > per[0, 0]                       # a constant map still gets a valid range
    rgb = colorize(maps, shared, signed=False, faces=np.zeros((2, 2, 2), np.uint8))
    assert rgb.shape == (2, 2, 2, 3) and rgb.dtype == np.uint8
    # percentile: one outlier does not set the scale for everything else
    spiky = np.concatenate([np.linspace(0, 1, 99), [100.0]]).reshape(1, 10, 10)
    two = np.concatenate([spiky, -spiky])
    np.testing.assert_allclose(color_limits(two, shared=True, signed=True, percentile=98),
                               [[-np.percentile(np.abs(two), 98), np.percentile(np.abs(two), 98)]] * 2)
    lim = color_limits(spiky, shared=False, signed=False, percentile=98)[0]
    assert lim[0] == 0 and lim[1] == pytest.approx(np.percentile(spiky, 98)) and lim[1] < 2
    np.testing.assert_allclose(color_limits(maps, shared=True, signed=False, percentile=100), shared)


def test_heat_overlay_uses_the_colorize_colours() -> None:
    """The live view's overlay and the attribution pages colour the same map identically."""
    g = np.random.default_rng(0)
    crop = g.integers(0, 256, (6, 6), dtype=np.uint8)
    amap = g.random((6, 6)) * 3.0
    amap[0, 0] = 0.0                                          # unsigned limits [0, max]
    lim = color_limits(amap, shared=False, signed=False)
    for alpha in (0.45, 1.0):
        np.testing.assert_array_equal(heat_overlay(crop, amap, alpha=alpha),
                                      colorize(amap, lim, signed=False, faces=crop, alpha=alpha))
    # negative values are dropped, NaN is 0, a small map is resized to the crop
    signed = amap - 1.0
    expect = colorize(np.clip(signed, 0, None), np.array([[0.0, signed.max()]]), signed=False, faces=crop, alpha=0.5)
    signed[1, 1] = np.nan
    expect[1, 1] = colorize(np.zeros((1, 1)), np.array([[0.0, 1.0]]), signed=False, faces=crop[1:2, 1:2], alpha=0.5)[0, 0]
    np.testing.assert_array_equal(heat_overlay(crop, signed, alpha=0.5), expect)
    big = heat_overlay(np.zeros((24, 30), np.uint8), amap)
    assert big.shape == (24, 30, 3) and big.dtype == np.uint8 and big.max() > 0


def test_guard_reports_a_leaked_hook_and_restores_requires_grad() -> None:
    from fer_core.explain.guard import HookLeak, model_guard

    m = Linear()
    m.fc.bias.requires_grad_(False)
    with pytest.raises(HookLeak):
        with model_guard(m):
            handle = m.fc.register_forward_hook(lambda *a: None)
            m.fc.weight.requires_grad_(False)
            m.fc.bias.requires_grad_(True)
    handle.remove()
    assert m.fc.weight.requires_grad and not m.fc.bias.requires_grad
    with pytest.raises(ValueError, match="inner"):          # an error inside is not replaced by the leak
        with model_guard(m):
            handle = m.fc.register_forward_hook(lambda *a: None)
            raise ValueError("inner")
    handle.remove()


def test_cell_mean_maps_linear() -> None:
    m = Linear()
    u8 = torch.randint(0, 256, (10, S, S), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    labels = np.array([0, 0, 1, 1, 1, 2, 2, 0, 1, 2])
    preds = np.array([0, 1, 1, 1, 2, 2, 0, 0, 1, 2])
    res = cell_mean_maps(m, u8, PRE, labels, preds, "saliency", cells=[(1, 1), (0, 1), (2, 1)],
                         max_per_cell=2, normalize=False, batch_size=3)
    by = {(r.true, r.pred): r for r in res}
    assert (by[1, 1].count, by[1, 1].used) == (3, 2)
    np.testing.assert_allclose(by[1, 1].mean_map, np.abs(m.w(1)), rtol=1e-5)
    np.testing.assert_allclose(by[1, 1].mean_face, u8[[2, 3]].float().mean(0).numpy() / 255, rtol=1e-6)
    assert by[2, 1].used == 0 and by[2, 1].count == 0
    true_t = cell_mean_maps(m, u8, PRE, labels, preds, "saliency", cells=[(0, 1)], target="true", normalize=False)
    np.testing.assert_allclose(true_t[0].mean_map, np.abs(m.w(0)), rtol=1e-5)


def test_sanity_check_randomises_a_copy_from_the_top() -> None:
    m, x = Mixed().eval(), faces(3)
    state = {k: v.clone() for k, v in m.state_dict().items()}
    rand, layers = randomize_top(m, 2, seed=1)
    assert layers == ["fc", "conv2"]
    assert not torch.equal(rand.fc.weight, m.fc.weight) and not torch.equal(rand.conv2.weight, m.conv2.weight)
    assert torch.equal(rand.conv1.weight, m.conv1.weight)
    assert all(torch.equal(v, m.state_dict()[k]) for k, v in state.items())   # original untouched
    res = sanity_check(m, x, "pred", "saliency", n_layers=None)
    assert res.original.shape == res.randomized.shape == (3, S, S)
    assert res.similarity.shape == (3,) and res.mean_similarity < 0.99
    np.testing.assert_allclose(spearman(res.original, res.original), 1.0)
    assert np.isnan(spearman(np.zeros((1, 2, 2)), np.ones((1, 2, 2))))[0]
