"""The reports' hand-derived gradients and size formula against torch (float64)."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fer_core import mathcheck as mc

TOL = 1e-6


def test_batchnorm_matches_autograd():
    for key, diff in mc.check_batchnorm(n=16, d=8, seed=0).items():
        assert diff < TOL, key
    for key, diff in mc.check_batchnorm(n=4, d=3, spatial=5, seed=1).items():
        assert diff < TOL, key


def test_batchnorm_intermediate_grads():
    """dvar and dmean are the *total* derivatives w.r.t. σ² and μ as graph nodes."""
    rng = np.random.default_rng(3)
    x = rng.normal(2.0, 3.0, size=(10, 4))
    gamma, beta, dout = rng.normal(size=4), rng.normal(size=4), rng.normal(size=(10, 4))
    eps = 1e-5
    _, cache = mc.batchnorm_forward(x, gamma, beta, eps)
    g = mc.batchnorm_backward(dout, cache)
    assert set(g) == {"dx_hat", "dvar", "dmean", "dx", "dgamma", "dbeta"}

    xt = torch.tensor(x, requires_grad=True)
    mu = xt.mean(0)
    mu.retain_grad()
    var = ((xt - mu) ** 2).mean(0)
    var.retain_grad()
    x_hat = (xt - mu) / torch.sqrt(var + eps)
    x_hat.retain_grad()
    (torch.tensor(gamma) * x_hat + torch.tensor(beta)).backward(torch.tensor(dout))
    np.testing.assert_allclose(g["dx_hat"], x_hat.grad.numpy(), atol=TOL)
    np.testing.assert_allclose(g["dvar"], var.grad.numpy(), atol=TOL)
    np.testing.assert_allclose(g["dmean"], mu.grad.numpy(), atol=TOL)
    np.testing.assert_allclose(g["dx"], xt.grad.numpy(), atol=TOL)


def test_softmax_xent():
    for key, diff in mc.check_softmax_xent(n=16, c=7, seed=0).items():
        assert diff < TOL, key
    loss, grad = mc.softmax_xent_grad(np.zeros((3, 7)), np.array([0, 1, 6]))
    assert loss == pytest.approx(np.log(7))
    np.testing.assert_allclose(grad.sum(1), 0.0, atol=1e-15)
    loss, grad = mc.softmax_xent_grad(np.array([[1000.0, 0.0], [0.0, 1000.0]]), np.array([1, 1]))
    assert np.isfinite(loss) and np.isfinite(grad).all() and loss == pytest.approx(500.0)
    with pytest.raises(ValueError):
        mc.softmax_xent_grad(np.zeros((3, 7)), np.zeros(2, dtype=int))


def test_check_all_flat():
    out = mc.check_all()
    assert "batchnorm.dx" in out and "softmax_xent.grad" in out
    assert max(out.values()) < TOL


def test_conv_output_size_matches_torch():
    x = torch.zeros(1, 1, 13, 13)
    for k, s, p, d in itertools.product((1, 2, 3, 5), (1, 2, 3), (0, 1, 2), (1, 2)):
        if p > k // 2:
            continue
        for w in (5, 12, 13):
            xx = x[..., :w, :w]
            try:
                got = mc.conv_output_size(w, k, s, p, d)
            except ValueError:
                got = None
            try:
                ref = F.conv2d(xx, torch.zeros(1, 1, k, k), stride=s, padding=p, dilation=d).shape[-1]
            except RuntimeError:
                ref = None
            assert got == ref, (w, k, s, p, d)
            for ceil in (False, True):
                try:
                    got = mc.conv_output_size(w, k, s, p, d, ceil_mode=ceil)
                except ValueError:
                    got = None
                try:
                    ref = F.max_pool2d(xx, k, s, p, d, ceil_mode=ceil).shape[-1]
                except RuntimeError:
                    ref = None
                assert got == ref, (w, k, s, p, d, ceil)


def test_conv_output_size_examples_and_errors():
    assert mc.conv_output_size(48, 5, 1, 2) == 48
    assert mc.conv_output_size(48, 2, 2) == 24
    assert mc.conv_output_size(48, 7, 2, 3) == 24
    assert mc.conv_output_size(5, 2, 2, ceil_mode=True) == 3
    with pytest.raises(ValueError):
        mc.conv_output_size(2, 5)
    with pytest.raises(ValueError):
        mc.conv_output_size(48, 3, s=0)


def test_hand_derived_parts_do_not_import_torch():
    code = "import sys, fer_core.mathcheck as m; m.batchnorm_forward; print('torch' in sys.modules)"
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root, env=env)
    assert out.stdout.strip() == "False"
