"""Model page: an architecture's layer table and the reports' math, made checkable.

Why: the course reports size every conv/pool layer by hand and derive the BatchNorm backward pass
and the softmax–cross-entropy gradient on paper. Here each of those is run: the layer table puts
the output-size formula (filled in with the layer's own numbers) next to the shape a real forward
pass produced; a calculator evaluates the formula for any numbers; and the hand-derived gradients
from :mod:`fer_core.mathcheck` are compared with torch autograd on random data, showing the max
absolute difference.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from dashboard import components, resources
from fer_core.checkpoint import CheckpointError
from fer_core.mathcheck import conv_output_size
from fer_core.models import list_models, model_info
from fer_core.models.summary import LayerRow
from fer_core.runs import RunError

TOLERANCE = 1e-9  # float64 agreement expected between hand-derived and autograd results


def _shape(s: Any) -> str:
    return "×".join(str(v) for v in s) if s else "—"


def layer_frame(rows: list[LayerRow]) -> pd.DataFrame:
    return pd.DataFrame([{
        "layer": r.name, "type": r.type, "input": _shape(r.input_shape),
        "output (observed)": _shape(r.output_shape), "params": int(r.params),
        "formula": r.formula or "",
        "check": "" if r.ok is None else ("✓" if r.ok else f"✗ predicted {_shape(r.predicted_shape)}"),
    } for r in rows])


def layer_section() -> None:
    st.subheader("Layer table")
    src = st.radio("Source", ["architecture", "run"], horizontal=True, key="model_src")
    rows: list[LayerRow] | None = None
    if src == "architecture":
        names = list_models()
        default = names.index("cnn4") if "cnn4" in names else 0
        name = st.selectbox("Architecture", names, index=default, key="model_arch")
        st.caption(model_info(name).description)
        try:
            rows = resources.layer_rows(name)
        except Exception as exc:  # a builder that fails on 48×48 input: say so, keep the page
            st.error(f"Could not build {name}: {exc}")
    else:
        runs = [r for r in resources.discover_runs() if r.config]
        if not runs:
            components.no_runs_message()
        else:
            path = components.pick_run(runs, "model_run", "Run")
            info = components.runs_by_path(runs)[path]
            components.run_problem(info)
            st.caption(f"model `{info.config.get('model')}` {info.config.get('model_kwargs') or ''}")
            try:
                rows = resources.run_layer_rows(resources.loaded_run(info.path))
            except (CheckpointError, RunError, OSError, RuntimeError, ValueError) as exc:
                st.warning(f"Cannot show this run's layers: {exc}")
    if rows is None:
        return
    total = sum(int(r.params) for r in rows)
    checked = [r for r in rows if r.ok is not None]
    ok = sum(1 for r in checked if r.ok)
    c1, c2, c3 = st.columns(3)
    c1.metric("parameters", f"{total:,}")
    c2.metric("layers", len(rows))
    c3.metric("size checks (formula = observed)", f"{ok}/{len(checked)}")
    with st.container(key="model_layers_box"):
        st.dataframe(layer_frame(rows), hide_index=True, key="model_layers", width="stretch",
                     height=min(36 * (len(rows) + 1) + 4, 760),
                     column_config={"params": st.column_config.NumberColumn(format="localized")})


def conv_section() -> None:
    st.subheader("Conv / pool output size")
    st.latex(r"W_{out} = \left\lfloor \frac{W + 2P - D\,(K-1) - 1}{S} \right\rfloor + 1"
             r"\qquad (D = 1:\ \left\lfloor \frac{W + 2P - K}{S} \right\rfloor + 1)")
    cols = st.columns(5)
    w = cols[0].number_input("input W", 1, 4096, 48, key="conv_w")
    k = cols[1].number_input("kernel K", 1, 512, 3, key="conv_k")
    s = cols[2].number_input("stride S", 1, 64, 1, key="conv_s")
    p = cols[3].number_input("padding P", 0, 512, 1, key="conv_p")
    d = cols[4].number_input("dilation D", 1, 64, 1, key="conv_d")
    w, k, s, p, d = int(w), int(k), int(s), int(p), int(d)
    try:
        out = conv_output_size(w, k, s, p, d)
    except ValueError as exc:
        st.error(str(exc))
        return
    num = w + 2 * p - d * (k - 1) - 1
    st.latex(rf"W_{{out}} = \left\lfloor \frac{{{w} + 2\cdot{p} - {d}\cdot({k}-1) - 1}}{{{s}}} \right\rfloor + 1"
             rf" = \left\lfloor \frac{{{num}}}{{{s}}} \right\rfloor + 1 = {out}")
    observed = _torch_conv_width(w, k, s, p, d)
    if observed == out:
        st.success(f"A real torch convolution on a length-{w} axis gives {observed}: the formula agrees.")
    else:
        st.error(f"torch gives {observed}, the formula {out}.")


def _torch_conv_width(w: int, k: int, s: int, p: int, d: int) -> int:
    """Observed output length of a real torch conv (1-D: the formula is per axis)."""
    import torch

    with torch.no_grad():
        conv = torch.nn.Conv1d(1, 1, k, stride=s, padding=p, dilation=d, bias=False)
        return int(conv(torch.zeros(1, 1, w)).shape[-1])


def _diff_frame(d: dict[str, float]) -> pd.DataFrame:
    return pd.DataFrame([{"quantity": k, "max |hand − autograd|": v,
                          "agrees": "✓" if v < TOLERANCE else "✗"} for k, v in d.items()])


def batchnorm_section() -> None:
    st.subheader("BatchNorm: forward and hand-derived backward vs autograd")
    st.latex(r"\mu = \tfrac{1}{m}\sum_i x_i,\quad \sigma^2 = \tfrac{1}{m}\sum_i (x_i-\mu)^2,\quad "
             r"\hat x_i = \frac{x_i-\mu}{\sqrt{\sigma^2+\epsilon}},\quad y_i = \gamma\hat x_i + \beta")
    st.latex(r"\frac{\partial l}{\partial \hat x_i} = \frac{\partial l}{\partial y_i}\gamma,\quad "
             r"\frac{\partial l}{\partial \sigma^2} = \sum_i \frac{\partial l}{\partial \hat x_i}(x_i-\mu)"
             r"\left(-\tfrac12\right)(\sigma^2+\epsilon)^{-3/2}")
    st.latex(r"\frac{\partial l}{\partial \mu} = \sum_i \frac{\partial l}{\partial \hat x_i}"
             r"\frac{-1}{\sqrt{\sigma^2+\epsilon}} + \frac{\partial l}{\partial \sigma^2}\,"
             r"\frac{-2}{m}\sum_i (x_i-\mu)")
    st.latex(r"\frac{\partial l}{\partial x_i} = \frac{\partial l}{\partial \hat x_i}\frac{1}{\sqrt{\sigma^2+\epsilon}}"
             r" + \frac{\partial l}{\partial \sigma^2}\frac{2(x_i-\mu)}{m} + \frac{\partial l}{\partial \mu}\frac1m,"
             r"\quad \frac{\partial l}{\partial \gamma} = \sum_i \frac{\partial l}{\partial y_i}\hat x_i,\quad "
             r"\frac{\partial l}{\partial \beta} = \sum_i \frac{\partial l}{\partial y_i}")
    cols = st.columns(4)
    n = int(cols[0].number_input("batch N", 2, 512, 16, key="bn_n"))
    d = int(cols[1].number_input("features D", 1, 256, 8, key="bn_d"))
    spatial = int(cols[2].number_input("spatial H=W (0 = BatchNorm1d)", 0, 32, 0, key="bn_hw"))
    seed = int(cols[3].number_input("seed", 0, 10_000, 0, key="bn_seed"))
    res = resources.batchnorm_check(n, d, seed, spatial or None)
    worst = max(res.values())
    st.metric("max |hand − autograd| (float64)", f"{worst:.2e}")
    st.dataframe(_diff_frame(res), hide_index=True, key="bn_table",
                 column_config={"max |hand − autograd|": st.column_config.NumberColumn(format="%.2e")})


def softmax_section() -> None:
    st.subheader("Softmax + cross-entropy gradient vs autograd")
    st.latex(r"p_{ik} = \frac{e^{z_{ik}}}{\sum_j e^{z_{ij}}},\quad l = -\frac1N\sum_i \log p_{i,y_i},\quad "
             r"\frac{\partial l}{\partial z_{ik}} = \frac{p_{ik} - \mathbb{1}[k=y_i]}{N}"
             r"\quad(\hat y - y\ \text{per row})")
    cols = st.columns(4)
    n = int(cols[0].number_input("rows N", 1, 1024, 16, key="sm_n"))
    c = int(cols[1].number_input("classes C", 2, 1000, 7, key="sm_c"))
    scale = float(cols[2].number_input("logit scale", 0.1, 100.0, 3.0, key="sm_scale"))
    seed = int(cols[3].number_input("seed", 0, 10_000, 0, key="sm_seed"))
    res = resources.softmax_check(n, c, seed, scale)
    st.metric("max |hand − autograd| (float64)", f"{max(res.values()):.2e}")
    st.dataframe(_diff_frame(res), hide_index=True, key="sm_table",
                 column_config={"max |hand − autograd|": st.column_config.NumberColumn(format="%.2e")})


def main() -> None:
    st.title("Model")
    layer_section()
    st.divider()
    conv_section()
    st.divider()
    batchnorm_section()
    st.divider()
    softmax_section()


if __name__ == "__main__":
    main()
