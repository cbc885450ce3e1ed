"""Runs page: compare training runs side by side -- curves, configs, best/final and per-class metrics.

Why: the reports' experiments (normalisation, augmentation, architecture) are comparisons of runs,
so the page overlays any number of them, highlights only the config keys that differ (the actual
experimental variable), and puts the stored per-class accuracies next to each other. A run that is
still training refreshes its curves in a fragment on a timer, so a user can watch it without
reloading. Broken runs are listed with their problem and skipped; the rest keeps working.

What is selected first: the user's own runs (anything not under the shipped ``checkpoints/``),
newest first, since someone who trained a model comes here to see it; the shipped runs only when
there are none.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from dashboard import components, resources
from fer_core.gallery import differing_keys, ema, flatten_config
from fer_core.runs import RunError, RunInfo, inspect_run

REFRESH_S = 5.0
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2",
          "#7f7f7f", "#bcbd22")
RESULT_KEYS = ("created", "best_epoch", "best_val_acc", "finished")  # results, not settings
DEFAULT_MAX = 8  # runs selected on the first view (more make the curves unreadable)


def curve_figures(runs: Sequence[RunInfo], frames: dict[str, pd.DataFrame], smooth: float,
                  xaxis: str) -> tuple[go.Figure, go.Figure]:
    """Loss and accuracy figures: train dashed, val solid, one colour per run, EMA-smoothed.

    The legend lists each run once (short names; clicking one hides both of its curves), so it
    stays readable with many runs.
    """
    figs = {m: go.Figure() for m in ("loss", "acc")}
    xcol = "epoch" if xaxis == "epoch" else "time_s"
    names = _short_names(runs)
    for n, info in enumerate(runs):
        df = frames.get(str(info.path))
        if df is None or df.empty:
            continue
        color = COLORS[n % len(COLORS)]
        name = names[n]
        x = df[xcol].to_numpy(dtype=float) / (60.0 if xcol == "time_s" else 1.0)
        for metric, fig in figs.items():
            for part, dash in (("train", "dash"), ("val", "solid")):
                y = ema(df[f"{part}_{metric}"].to_numpy(dtype=float), smooth)
                fig.add_trace(go.Scatter(
                    x=x, y=y, mode="lines+markers" if len(x) < 30 else "lines", name=name,
                    legendgroup=name, showlegend=part == "val", line=dict(color=color, dash=dash),
                    marker=dict(size=4),
                    hovertemplate=f"{name} {part}: %{{y:.4f}}<extra></extra>"))
    xtitle = "epoch" if xcol == "epoch" else "wall time (min)"
    rows = -(-len(runs) // 3)
    for metric, fig in figs.items():
        fig.update_layout(height=360 + 22 * rows, margin=dict(l=10, r=10, t=40, b=10), hovermode="x unified",
                          title=dict(text=("loss" if metric == "loss" else "accuracy")
                                     + " — solid: val, dashed: train", font=dict(size=14)),
                          legend=dict(orientation="h", yanchor="top", y=-0.26, font=dict(size=11)),
                          xaxis_title=xtitle, yaxis_title="loss" if metric == "loss" else "accuracy",
                          yaxis=dict(tickformat=".0%") if metric == "acc" else {})
    return figs["loss"], figs["acc"]


def _short_names(runs: Sequence[RunInfo]) -> list[str]:
    """Run folder names, or root/name where two roots hold runs of the same name."""
    names = [r.name for r in runs]
    return [r.name if names.count(r.name) == 1 else r.label for r in runs]


def summary_table(runs: Sequence[RunInfo], frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Best and final metrics per run, plus the stored test accuracy where evaluated."""
    rows: list[dict[str, Any]] = []
    for info, name in zip(runs, _short_names(runs)):
        df = frames.get(str(info.path))
        rec: dict[str, Any] = {"run": name, "model": info.config.get("model", "?")}
        if df is not None and not df.empty:
            best = df.loc[df["val_acc"].idxmax()]
            last = df.iloc[-1]
            rec.update({"epochs": int(last["epoch"]), "best val acc": float(best["val_acc"]),
                        "best epoch": int(best["epoch"]), "final val acc": float(last["val_acc"]),
                        "final train acc": float(last["train_acc"]), "min val loss": float(df["val_loss"].min()),
                        "time (min)": float(last["time_s"]) / 60.0})
        for split in ("val", "test"):
            try:
                ev = resources.run_eval(info.path, split)
            except RunError:
                ev = None
            rec[f"{split} acc (eval)"] = float(ev["accuracy"]) if ev else None
        rec["status"] = "training…" if info.running else ("⚠ " + info.error if info.error else "ok")
        rows.append(rec)
    return pd.DataFrame(rows)


def config_table(runs: Sequence[RunInfo]) -> tuple[pd.DataFrame, list[str]]:
    """Flattened configs (rows = keys, columns = runs) and the keys whose values differ."""
    cfgs = [{k: v for k, v in r.config.items() if k not in RESULT_KEYS} for r in runs]
    flats = [flatten_config(c) for c in cfgs]
    keys = sorted(set().union(*flats)) if flats else []
    labels = _unique_labels(runs)
    table = pd.DataFrame({lab: [_cell(f.get(k)) for k in keys] for lab, f in zip(labels, flats)}, index=keys)
    return table, differing_keys(cfgs)


def _unique_labels(runs: Sequence[RunInfo]) -> list[str]:
    """Column names for the tables: short run names (root/name only where names collide)."""
    return _short_names(runs)


def _cell(v: Any) -> str:
    return "—" if v is None else str(v)


def per_class_frame(runs: Sequence[RunInfo], split: str) -> tuple[pd.DataFrame, list[str]]:
    """Per-class accuracy (recall) from eval/<split>.json: rows = classes, columns = runs."""
    cols: dict[str, pd.Series] = {}
    missing: list[str] = []
    for lab, info in zip(_unique_labels(runs), runs):
        try:
            ev = resources.run_eval(info.path, split)
        except RunError as exc:
            missing.append(f"{info.label}: {exc}")
            continue
        if not ev or "per_class" not in ev:
            missing.append(info.label)
            continue
        cols[lab] = pd.Series({c: v["recall"] for c, v in ev["per_class"].items()})
        cols[lab]["(overall)"] = ev.get("accuracy", np.nan)
    return pd.DataFrame(cols), missing


def per_class_figure(frame: pd.DataFrame) -> go.Figure:
    fig = go.Figure()
    body = frame.drop(index="(overall)", errors="ignore")
    for n, col in enumerate(frame.columns):
        fig.add_trace(go.Bar(x=list(body.index), y=body[col], name=col, marker_color=COLORS[n % len(COLORS)],
                             hovertemplate=f"{col}<br>%{{x}}: %{{y:.1%}}<extra></extra>"))
    fig.update_layout(barmode="group", height=360, margin=dict(l=10, r=10, t=10, b=10),
                      yaxis=dict(tickformat=".0%", range=[0, 1]),
                      legend=dict(orientation="h", yanchor="top", y=-0.15, font=dict(size=10)))
    return fig


def _live_section(paths: list[str], smooth: float, xaxis: str) -> None:
    """Curves + best/final table; re-read on a timer while a run is training."""
    runs = [inspect_run(p) for p in paths]
    frames: dict[str, pd.DataFrame] = {}
    for info in runs:
        try:
            frames[str(info.path)] = resources.run_metrics(info.path)
        except RunError as exc:
            st.warning(f"**{info.label}**: cannot plot its curves — {exc}", icon="⚠️")
    training = [r.label for r in runs if r.running]
    if training:
        st.caption(f"⏺ training now: {', '.join(training)} — curves refresh every {REFRESH_S:.0f} s")
    if not any(len(f) for f in frames.values()):
        st.info("No epochs recorded yet in the selected runs.")
    else:
        loss, acc = curve_figures(runs, frames, smooth, xaxis)
        c1, c2 = st.columns(2)
        with c1:
            st.plotly_chart(loss, key="runs_loss", width="stretch")
        with c2:
            st.plotly_chart(acc, key="runs_acc", width="stretch")
    st.subheader("Best and final metrics")
    pct = {c: st.column_config.NumberColumn(c, format="percent") for c in
           ("best val acc", "final val acc", "final train acc", "val acc (eval)", "test acc (eval)")}
    with st.container(key="runs_summary_box"):
        st.dataframe(summary_table(runs, frames), hide_index=True, key="runs_summary",
                     column_config={**pct, "min val loss": st.column_config.NumberColumn(format="%.4f"),
                                    "time (min)": st.column_config.NumberColumn(format="%.1f")})


def default_selection(runs: Sequence[RunInfo]) -> list[str]:
    """The runs selected on the first view: the user's healthy runs newest first (a run still
    training is among them, marked by its label), else the shipped ones, else the first run (so its
    problem is shown)."""
    healthy = [r for r in runs if not r.error]
    own = sorted((r for r in healthy if not resources.is_shipped(r)), key=lambda r: r.modified, reverse=True)
    if own:
        return [str(r.path) for r in own[:DEFAULT_MAX]]
    shipped = [str(r.path) for r in healthy if resources.is_shipped(r)]
    return shipped or [str(runs[0].path)]


def main() -> None:
    st.title("Runs")
    runs = resources.discover_runs()
    if not runs:
        components.no_runs_message()
        return
    selected = components.pick_runs(runs, "runs_select", default_selection(runs))
    if not selected:
        st.info("Pick one or more runs above.")
        return
    by = components.runs_by_path(runs)
    chosen = [by[p] for p in selected]
    for info in chosen:
        components.run_problem(info)

    c1, c2 = st.columns([2, 1])
    with c1:
        smooth = st.slider("Smoothing (EMA weight)", 0.0, 0.95, 0.0, 0.05, key="runs_smooth",
                           help="0 = raw values; higher = smoother (bias-corrected EMA)")
    with c2:
        xaxis = st.radio("x axis", ["epoch", "wall time"], horizontal=True, key="runs_x")

    live = st.fragment(_live_section, run_every=REFRESH_S if any(r.running for r in chosen) else None)
    live(selected, float(smooth), str(xaxis))

    st.subheader("Configurations")
    usable = [r for r in chosen if r.config]
    if usable:
        table, diff = config_table(usable)
        only = st.checkbox("Only the keys that differ", value=len(usable) > 1 and bool(diff),
                           key="runs_only_diff")
        if only and len(usable) > 1:
            table = table.loc[[k for k in table.index if k in diff]]
        if len(usable) > 1:
            st.caption(f"{len(diff)} key(s) differ between the selected runs (highlighted).")
        diffset = set(diff)
        styled = table.style.apply(
            lambda row: ["background-color: #fff3cd; font-weight: 600" if row.name in diffset else ""
                         for _ in row], axis=1)
        with st.container(key="runs_config_box"):
            st.dataframe(styled, key="runs_config", width="stretch")
    else:
        st.info("None of the selected runs has a readable config.json.")

    st.subheader("Per-class accuracy")
    split = st.selectbox("Evaluation split", ["test", "val"], key="runs_eval_split")
    frame, missing = per_class_frame(chosen, split)
    if not frame.empty:
        st.plotly_chart(per_class_figure(frame), key="runs_per_class_chart", width="stretch")
        with st.container(key="runs_per_class_box"):
            st.dataframe(frame.style.format("{:.1%}", na_rep="—"), key="runs_per_class", width="stretch")
    if missing:
        st.info(f"No eval/{split}.json yet for: {', '.join(missing)}. Evaluate with "
                f"`python -m fer_core evaluate RUN_DIR --split {split}`.")

    report_section(chosen)


def report_section(chosen: Sequence[RunInfo]) -> None:
    """The "Report" button: one run's whole analysis as one self-contained HTML file (the other
    selected runs overlaid in its history), built with a progress bar and offered for download.
    Built through ``resources.report_html``, so building it again is a cache hit."""
    st.subheader("Report")
    by = {str(r.path): r for r in chosen if r.config}
    if not by:
        return
    c1, c2 = st.columns([3, 1])
    with c1:
        target = st.selectbox("Report on", list(by), format_func=lambda p: components.run_label(by[p]),
                              key="runs_report_run")
    with c2:
        split = st.selectbox("Split", ["test", "val"], key="runs_report_split",
                             help="split of the confusion-matrix, saliency and filter sections")
    others = [r for p, r in by.items() if p != target]
    st.caption("One HTML file with every image embedded (opens offline): summary, architecture, training history"
               + (f" with the {len(others)} other selected run(s) overlaid" if others else "")
               + ", confusion matrix, saliency, filters and the math. Same as `python -m fer_core report`.")
    wanted = (target, split, tuple(str(r.path) for r in others), components.data_path())
    if st.button("Report", key="runs_report_build", type="primary"):
        bar = st.progress(0.0, text="Building the report…")
        try:
            html = resources.report_html(by[target], components.data_path(), others, split,
                                         progress=lambda f, m: bar.progress(min(max(float(f), 0.0), 1.0), text=m))
        except (RunError, ValueError) as exc:
            bar.empty()
            st.error(f"The report could not be built: {exc}")
            return
        bar.empty()
        st.session_state["runs_report_html"] = (wanted, html)
    built = st.session_state.get("runs_report_html")
    if built and built[0] == wanted:
        st.download_button("Download the report (HTML)", built[1], file_name=f"{by[target].name}-report.html",
                           mime="text/html", key="runs_report_download", on_click="ignore")


if __name__ == "__main__":
    main()
