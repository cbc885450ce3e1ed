"""The reports' hand-derived math, written out so it can be *checked* rather than believed.

Why this module exists: the course reports derive the batch-normalisation backward pass and the
softmax-cross-entropy gradient by hand, and size every conv/pool layer with the output-size
formula. A derivation in a PDF cannot be run; this file states the same equations in plain numpy
(no torch inside the hand-derived parts, so nothing is borrowed from autograd) and the
``check_*`` functions compare them with torch autograd on random float64 data. If a derivation is
wrong, a test fails.

:func:`conv_output_size` is also the single place the output-size formula lives;
:mod:`fer_core.models.summary` uses it to annotate every conv/pool row of the layer table.

torch is imported lazily, inside the ``check_*`` functions only.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "batchnorm_backward",
    "batchnorm_forward",
    "check_all",
    "check_batchnorm",
    "check_softmax_xent",
    "conv_output_size",
    "softmax_xent_grad",
]


# --------------------------------------------------------------------------- conv/pool sizes
def conv_output_size(w: int, k: int, s: int = 1, p: int = 0, d: int = 1, ceil_mode: bool = False) -> int:
    """Output length of a conv / pooling window along one axis.

    .. math::  W_{out} = \\left\\lfloor \\frac{W + 2P - D\\,(K-1) - 1}{S} \\right\\rfloor + 1

    ``D`` is the dilation (``D·(K−1)+1`` is the effective kernel extent, so for ``D = 1`` the
    numerator is the familiar ``W + 2P − K``). With ``ceil_mode=True`` (pools only) the floor
    becomes a ceiling, and -- as in PyTorch -- a last window that would start entirely inside the
    right padding is dropped.
    """
    for name, v in (("w", w), ("k", k), ("s", s), ("d", d)):
        if int(v) < 1:
            raise ValueError(f"conv_output_size: {name} must be >= 1, got {v}")
    if p < 0:
        raise ValueError(f"conv_output_size: padding must be >= 0, got {p}")
    num = w + 2 * p - d * (k - 1) - 1
    if ceil_mode:
        out = (num + s - 1) // s + 1  # ceil(num / s) + 1; // floors, as PyTorch's div_rtn
        if (out - 1) * s >= w + p:  # the last window would start inside the right padding
            out -= 1
    else:
        out = num // s + 1
    if out < 1:
        raise ValueError(
            f"conv_output_size: kernel extent {d * (k - 1) + 1} does not fit the padded input {w + 2 * p}"
        )
    return int(out)


# --------------------------------------------------------------------------- batch norm
def _bn_axes(x: np.ndarray) -> tuple[int, ...]:
    # (N, D) -> statistics over N;  (N, C, H, W) -> over N, H, W per channel C (BatchNorm2d).
    if x.ndim == 2:
        return (0,)
    if x.ndim == 4:
        return (0, 2, 3)
    raise ValueError(f"batchnorm expects (N, D) or (N, C, H, W), got shape {x.shape}")


def _bcast(v: np.ndarray, x: np.ndarray) -> np.ndarray:
    return v.reshape(1, -1, *([1] * (x.ndim - 2)))


def batchnorm_forward(
    x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float = 1e-5
) -> tuple[np.ndarray, dict[str, Any]]:
    """Training-mode batch normalisation with batch statistics.

    For ``x`` of shape (N, D) (or (N, C, H, W), statistics per channel over N·H·W values; m below
    is the number of values each statistic is taken over)::

        μ      = 1/m · Σ_i x_i
        σ²     = 1/m · Σ_i (x_i − μ)²          (biased variance, as in the forward pass of torch)
        x̂_i    = (x_i − μ) / √(σ² + ε)
        y_i    = γ · x̂_i + β

    Returns ``(y, cache)``; ``cache`` holds what :func:`batchnorm_backward` needs.
    """
    x = np.asarray(x)
    axes = _bn_axes(x)
    m = int(np.prod([x.shape[a] for a in axes]))
    mu = x.mean(axis=axes)
    xc = x - _bcast(mu, x)
    var = (xc**2).mean(axis=axes)
    inv_std = 1.0 / np.sqrt(var + eps)
    x_hat = xc * _bcast(inv_std, x)
    out = _bcast(np.asarray(gamma), x) * x_hat + _bcast(np.asarray(beta), x)
    cache = {"x": x, "xc": xc, "x_hat": x_hat, "mu": mu, "var": var, "inv_std": inv_std,
             "gamma": np.asarray(gamma), "eps": eps, "m": m, "axes": axes}
    return out, cache


def batchnorm_backward(dout: np.ndarray, cache: dict[str, Any]) -> dict[str, np.ndarray]:
    """The hand-derived batch-norm backward pass, one chain-rule step per line.

    With upstream gradient ``∂l/∂y_i`` (``dout``) and m values per statistic::

        ∂l/∂x̂_i  = ∂l/∂y_i · γ
        ∂l/∂σ²   = Σ_i ∂l/∂x̂_i · (x_i − μ) · (−½) (σ² + ε)^(−3/2)
        ∂l/∂μ    = Σ_i ∂l/∂x̂_i · (−1/√(σ² + ε))  +  ∂l/∂σ² · (−2/m) Σ_i (x_i − μ)
        ∂l/∂x_i  = ∂l/∂x̂_i / √(σ² + ε)  +  ∂l/∂σ² · 2 (x_i − μ)/m  +  ∂l/∂μ / m
        ∂l/∂γ    = Σ_i ∂l/∂y_i · x̂_i
        ∂l/∂β    = Σ_i ∂l/∂y_i

    (The second term of ∂l/∂μ is zero because Σ(x_i − μ) = 0; it is kept because it is what the
    derivation produces -- σ² depends on μ.)

    Returns a dict with ``dx_hat``, ``dvar`` (∂l/∂σ²), ``dmean`` (∂l/∂μ), ``dx``, ``dgamma``,
    ``dbeta``.
    """
    dout = np.asarray(dout)
    x, xc, x_hat = cache["x"], cache["xc"], cache["x_hat"]
    var, eps, m, axes, gamma = cache["var"], cache["eps"], cache["m"], cache["axes"], cache["gamma"]
    b = lambda v: _bcast(v, x)  # noqa: E731 - broadcast a per-feature vector over x

    dx_hat = dout * b(gamma)
    dvar = np.sum(dx_hat * xc * -0.5 * b((var + eps) ** -1.5), axis=axes)
    dmean = np.sum(dx_hat * b(-1.0 / np.sqrt(var + eps)), axis=axes) + dvar * (-2.0 / m) * np.sum(xc, axis=axes)
    dx = dx_hat / b(np.sqrt(var + eps)) + b(dvar) * 2.0 * xc / m + b(dmean) / m
    dgamma = np.sum(dout * x_hat, axis=axes)
    dbeta = np.sum(dout, axis=axes)
    return {"dx_hat": dx_hat, "dvar": dvar, "dmean": dmean, "dx": dx, "dgamma": dgamma, "dbeta": dbeta}


def check_batchnorm(n: int = 16, d: int = 8, seed: int = 0, eps: float = 1e-5,
                    spatial: int | None = None) -> dict[str, float]:
    """Max |hand-derived − autograd| for dx, dgamma, dbeta (and the forward output), float64.

    ``spatial=h`` checks the BatchNorm2d case on (n, d, h, h) input instead of (n, d).
    """
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(seed)
    shape = (n, d) if spatial is None else (n, d, spatial, spatial)
    x = rng.normal(1.5, 2.0, size=shape)
    gamma = rng.normal(1.0, 0.5, size=d)
    beta = rng.normal(0.0, 0.5, size=d)
    dout = rng.normal(size=shape)

    out, cache = batchnorm_forward(x, gamma, beta, eps)
    grads = batchnorm_backward(dout, cache)

    xt = torch.tensor(x, requires_grad=True)
    gt = torch.tensor(gamma, requires_grad=True)
    bt = torch.tensor(beta, requires_grad=True)
    yt = F.batch_norm(xt, None, None, gt, bt, training=True, eps=eps)
    yt.backward(torch.tensor(dout))

    def diff(a: np.ndarray, t: "torch.Tensor") -> float:
        return float(np.max(np.abs(a - t.detach().numpy())))

    return {
        "out": diff(out, yt),
        "dx": diff(grads["dx"], xt.grad),
        "dgamma": diff(grads["dgamma"], gt.grad),
        "dbeta": diff(grads["dbeta"], bt.grad),
    }


# --------------------------------------------------------------------------- softmax + CE
def softmax_xent_grad(logits: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean softmax cross-entropy over N rows and its gradient w.r.t. the logits::

        p_ik = exp(z_ik − max_k z_ik) / Σ_j exp(z_ij − max_k z_ik)      (shift for stability)
        l    = −1/N · Σ_i log p_{i, y_i}
        ∂l/∂z_ik = (p_ik − 1[k = y_i]) / N

    The derivation: ∂(−log p_y)/∂z_k = −(1[k=y] − p_k), because ∂ log p_y/∂z_k = 1[k=y] − p_k.
    """
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    if z.ndim != 2 or y.shape != (z.shape[0],):
        raise ValueError(f"expected logits (N, C) and labels (N,), got {z.shape} and {y.shape}")
    n = z.shape[0]
    shifted = z - z.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = float(-log_p[np.arange(n), y].mean())
    grad = np.exp(log_p)
    grad[np.arange(n), y] -= 1.0
    grad /= n
    return loss, grad


def check_softmax_xent(n: int = 16, c: int = 7, seed: int = 0, scale: float = 3.0) -> dict[str, float]:
    """Max |hand-derived − autograd| for the loss and the logit gradient, float64."""
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=scale, size=(n, c))
    y = rng.integers(0, c, size=n)
    loss, grad = softmax_xent_grad(logits, y)

    zt = torch.tensor(logits, requires_grad=True)
    lt = F.cross_entropy(zt, torch.tensor(y))
    lt.backward()
    return {
        "loss": abs(loss - float(lt.detach())),
        "grad": float(np.max(np.abs(grad - zt.grad.numpy()))),
    }


def check_all(seed: int = 0) -> dict[str, float]:
    """Every check in one flat dict (``batchnorm.dx``, ``softmax_xent.grad`` ...), for a CLI/page."""
    out: dict[str, float] = {}
    for k, v in check_batchnorm(seed=seed).items():
        out[f"batchnorm.{k}"] = v
    for k, v in check_batchnorm(n=4, d=3, spatial=5, seed=seed).items():
        out[f"batchnorm2d.{k}"] = v
    for k, v in check_softmax_xent(seed=seed).items():
        out[f"softmax_xent.{k}"] = v
    return out


if __name__ == "__main__":  # pragma: no cover - manual check
    for key, val in check_all().items():
        print(f"{key:24s} {val:.3e}")
    print("conv 48, k5, p2:", conv_output_size(48, 5, 1, 2), "| pool 48, k2 s2:", conv_output_size(48, 2, 2))
