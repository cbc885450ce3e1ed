"""Report sections about the run as a whole: summary, architecture, training history, the math.

Each builder takes the :class:`~fer_core.report.context.ReportContext` and returns a
:class:`~fer_core.report.html.Section` whose first line says how it was computed; whatever is
missing (no model, no eval, no metrics.csv) becomes a "why" note in the section. The numbers come
from the core only: the stored evaluations and :func:`fer_core.evaluate.compute_metrics`, the
layer table of :meth:`fer_core.model.LoadedRun.layer_rows`, ``metrics.csv`` through
:func:`fer_core.runs.read_metrics`, and the checks of :mod:`fer_core.mathcheck`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from fer_core.report import figures
from fer_core.report.context import ReportContext
from fer_core.report.html import Markup, Section, esc, figure, note, table
from fer_core.rundata import DataUnavailable, Predictions
from fer_core.runs import RunError, eval_path, read_config, read_eval, read_metrics

__all__ = ["architecture_section", "fmt_pct", "history_section", "math_section", "summary_section"]

# results, timestamps and provenance: not experimental settings, left out of the config comparison
NOT_SETTINGS = ("created", "best_epoch", "best_val_acc", "finished", "exported", "versions", "eval_tta_val")


def fmt_pct(v: Any, digits: int = 1) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return "—"
    return "—" if not np.isfinite(f) else f"{100 * f:.{digits}f}%"


def _shape(s: Sequence[int] | None) -> str:
    return "×".join(str(int(v)) for v in s) if s else "—"


# --------------------------------------------------------------------------- 1. summary
def split_metrics(ctx: ReportContext, split: str, tta: str = "none") -> tuple[dict[str, Any] | None, str]:
    """(metrics with accuracy/macro_f1/ece/n, where they come from) -- or (None, why not)."""
    from fer_core.evaluate import compute_metrics

    try:
        ev = read_eval(ctx.run, split, tta)
    except RunError as exc:
        ev, why = None, str(exc)
    else:
        why = f"no stored eval/{split}{'' if tta == 'none' else '-tta_' + tta}.json"
    if ev and all(k in ev for k in ("accuracy", "macro_f1", "ece")):
        return ev, f"stored eval/{split}{'' if tta == 'none' else '-tta_' + tta}.json"
    if tta != "none":
        return None, why
    pred: Predictions | None = ctx.pred if ctx.pred is not None and ctx.pred.split == split else None
    try:
        pred = pred or ctx.rd.stored_predictions(split)
        if pred is None and ctx.faceset is not None and ctx.model is not None:
            pred = ctx.rd.compute_predictions(split, ctx.faceset, model=ctx.model)
    except DataUnavailable as exc:
        return None, str(exc)
    if pred is None:
        reason = ctx.faces_reason if ctx.faceset is None else ctx.model_reason
        return None, f"{why}, no stored predictions, and they cannot be computed here: {reason}"
    m = compute_metrics(pred.label, pred.probs, ctx.classes)
    return m, pred.source


def summary_section(ctx: ReportContext) -> Section:
    cfg = ctx.config
    tta = str(cfg.get("eval_tta", "none") or "none")
    s = Section("summary", "Metrics from the run's stored evaluations (eval/<split>.json), else from its "
                           "per-face predictions via fer_core.evaluate.compute_metrics; ECE over 15 "
                           f"equal-width confidence bins; main split of this report: {ctx.split}.")
    m = ctx.model
    model_line = str(cfg.get("model", "?"))
    if m is not None:
        desc = m.source.describe or model_line
        model_line = f"{desc}; checkpoint {m.checkpoint.name}, epoch {m.epoch}"
        if m.model is not None:
            from fer_core.models.summary import total_params

            model_line += f"; {total_params(m.model):,} parameters"
    rows: list[list[Any]] = [["Run", str(ctx.run.name)], ["Model", model_line]]
    if ctx.model_reason:
        rows.append(["Model here", ctx.model_reason])
    elif m is not None and m.gradient_reason:
        rows.append(["Gradients", m.gradient_reason])
    data = Markup(esc(ctx.data_label) + (' <span class="tag">synthetic</span>' if ctx.synthetic else ""))
    rows.append(["Data", data])
    counts = cfg.get("data_summary") or {}
    if counts:
        rows.append(["Faces per split", ", ".join(f"{k} {int(v):,}" for k, v in counts.items())])
    if ctx.rd.data.note:
        rows.append(["Data on this machine", ctx.rd.data.note])
    rows.append(["Classes", ", ".join(ctx.classes)])
    train = cfg.get("train") or {}
    if train:
        rows.append(["Training", ", ".join(f"{k} {train[k]}" for k in (
            "optimizer", "lr", "schedule", "epochs", "batch_size", "aug", "normalize", "label_smoothing",
            "mixup", "ema") if k in train)])
    tta_text = tta
    if isinstance(cfg.get("eval_tta_val"), dict):
        tta_text += " (chosen on validation: " + ", ".join(
            f"{k} {fmt_pct(v)}" for k, v in cfg["eval_tta_val"].items()) + ")"
    rows.append(["Test-time augmentation (eval_tta)", tta_text])
    s.add(table(None, rows))

    s.add("<h3>Accuracy, macro-F1 and calibration per split</h3>")
    mrows: list[list[Any]] = []
    splits = ["test", "val"] + (["train"] if eval_path(ctx.run, "train").is_file() else [])
    for split in splits:
        for mode in ["none"] + ([tta] if tta != "none" else []):
            metrics, source = split_metrics(ctx, split, mode)
            if metrics is None:
                mrows.append([split, mode, "—", "—", "—", "—", source])
            else:
                mrows.append([split, mode, int(metrics.get("n", 0)), fmt_pct(metrics["accuracy"]),
                              f"{float(metrics['macro_f1']):.3f}", f"{float(metrics['ece']):.3f}", source])
    s.add(table(["split", "TTA", "n faces", "accuracy", "macro-F1", "ECE", "source"], mrows))
    return s


# --------------------------------------------------------------------------- 2. architecture
def architecture_section(ctx: ReportContext) -> Section:
    size = int(ctx.model.preprocess.size) if ctx.model is not None else 48
    s = Section("architecture", f"One forward pass of a 1×1×{size}×{size} input with hooks on every leaf module "
                                "(fer_core.models.summary); each conv/pool output size is recomputed with "
                                "⌊(W + 2P − D·(K−1) − 1)/S⌋ + 1 and compared with the observed shape.")
    if ctx.hook_reason():  # the table is made by forward hooks on the leaf modules
        return s.add(note(f"No layer table: {ctx.hook_reason()}"))
    rows = ctx.layer_rows()
    body = []
    for r in rows:
        if r.ok is None:
            check: Any = ""
        else:
            cls = "ok" if r.ok else "bad"
            text = f"✓ {r.formula}" if r.ok else f"✗ predicted {_shape(r.predicted_shape)}: {r.formula}"
            check = Markup(f'<span class="{cls}">{esc(text)}</span>')
        body.append([r.name, r.type, _shape(r.input_shape), _shape(r.output_shape), f"{r.params:,}", check])
    checked = [r for r in rows if r.ok is not None]
    agree = sum(1 for r in checked if r.ok)
    s.add(table(["layer", "type", "input", "output", "params", "output-size formula"], body))
    s.add(Markup(f'<p class="small">Total parameters: {sum(r.params for r in rows):,}; conv/pool size '
                 f"checks: {agree}/{len(checked)} agree with the observed shapes.</p>"))
    return s


# --------------------------------------------------------------------------- 3. history
def history_section(ctx: ReportContext, compare: Sequence[Path]) -> Section:
    from fer_core.gallery import differing_keys, flatten_config

    runs = [ctx.run, *compare]
    s = Section("history", f"metrics.csv of each run (one row per epoch; missing values of imported logs are "
                           f"skipped), {len(runs)} run(s): {', '.join(r.name for r in runs)}; best val = the "
                           "highest val_acc of any epoch; test = the stored eval/test.json.")
    configs: list[dict[str, Any]] = []
    series: list[tuple[str, Any]] = []
    summary: list[list[Any]] = []
    for run in runs:
        cfg = ctx.config if run == ctx.run else read_config(run)
        configs.append({k: v for k, v in cfg.items() if k not in NOT_SETTINGS})
        data = str(cfg.get("data", "?")) + (" (synthetic)" if str(cfg.get("data", "")).startswith("synthetic") else "")
        try:
            df = read_metrics(run)
        except RunError as exc:
            s.add(note(f"{run.name}: its curves cannot be drawn: {exc}"))
            df = None
        best, epoch = "—", "—"
        if df is not None and len(df):
            series.append((run.name, df))
            val = np.asarray(df["val_acc"], dtype=float)
            if np.isfinite(val).any():
                i = int(np.nanargmax(val))
                best, epoch = fmt_pct(val[i]), int(df["epoch"].iloc[i])
        elif df is not None:
            s.add(note(f"{run.name} has no training history (no metrics.csv rows)."))
        try:
            ev = read_eval(run, "test")
        except RunError:
            ev = None
        summary.append([run.name, str(cfg.get("model", "?")), data,
                        int(df["epoch"].max()) if df is not None and len(df) else 0, best, epoch,
                        fmt_pct(ev["accuracy"]) if ev else "—"])
    if series:
        s.add(figure(figures.curves(series), "Loss and accuracy per epoch (solid: validation, dashed: training).",
                     alt="training curves"))
    s.add(table(["run", "model", "data", "epochs", "best val acc", "best epoch", "test acc"], summary))
    if len(runs) > 1:
        diff = differing_keys(configs)
        flats = [flatten_config(c) for c in configs]
        if diff:
            s.add(f"<h3>Settings that differ ({len(diff)})</h3>",
                  table(["config key", *[r.name for r in runs]],
                        [[k, *["—" if f.get(k) is None else str(f.get(k)) for f in flats]] for k in diff]))
        else:
            s.add(Markup('<p class="small">The compared runs have the same settings.</p>'))
    return s


# --------------------------------------------------------------------------- 7. the math
BN_EQUATIONS = """μ = 1/m Σ x_i        σ² = 1/m Σ (x_i − μ)²        x̂_i = (x_i − μ)/√(σ² + ε)        y_i = γ x̂_i + β
∂l/∂x̂_i = ∂l/∂y_i · γ
∂l/∂σ²  = Σ ∂l/∂x̂_i · (x_i − μ) · (−½)(σ² + ε)^(−3/2)
∂l/∂μ   = Σ ∂l/∂x̂_i · (−1/√(σ² + ε)) + ∂l/∂σ² · (−2/m) Σ (x_i − μ)
∂l/∂x_i = ∂l/∂x̂_i /√(σ² + ε) + ∂l/∂σ² · 2(x_i − μ)/m + ∂l/∂μ / m
∂l/∂γ   = Σ ∂l/∂y_i · x̂_i          ∂l/∂β = Σ ∂l/∂y_i"""

XENT_EQUATIONS = """p_ik = exp(z_ik) / Σ_j exp(z_ij)        l = −1/N Σ_i log p_{i,y_i}
∂l/∂z_ik = (p_ik − 1[k = y_i]) / N"""


def math_section(ctx: ReportContext) -> Section:
    from fer_core.mathcheck import check_batchnorm, check_softmax_xent

    k = len(ctx.classes)
    s = Section("math", "Output sizes from this model's layer table; BatchNorm backward and softmax-cross-entropy "
                        "gradient: the hand-derived numpy formulas of fer_core.mathcheck against torch autograd on "
                        f"random float64 data (seed 0; BatchNorm1d 16×8 and BatchNorm2d 4×3×5×5, softmax 16×{k}).")
    s.add("<h3>Convolution / pooling output size</h3>",
          Markup("<pre>W_out = ⌊(W + 2P − D·(K − 1) − 1) / S⌋ + 1    (W input size, K kernel, S stride, "
                 "P padding, D dilation)</pre>"))
    if ctx.hook_reason():
        s.add(note(f"This model's numbers cannot be filled in: {ctx.hook_reason()}"))
    else:
        rows = [r for r in ctx.layer_rows() if r.formula]
        picks = [r for r in rows if r.type == "Conv2d"][:1] + [r for r in rows if "Pool" in r.type][:1]
        if not picks:
            s.add(note("This model has no Conv2d / pooling layer whose size the formula describes."))
        for r in picks:
            ok = "✓ matches" if r.ok else "✗ differs from"
            s.add(Markup(f"<p><b>{esc(r.name)}</b> ({esc(r.type)}), input {esc(_shape(r.input_shape))}: "
                         f"<code>{esc(r.formula)}</code> → {ok} the observed output "
                         f"{esc(_shape(r.output_shape))}.</p>"))
    bn1 = check_batchnorm(n=16, d=8, seed=0)
    bn2 = check_batchnorm(n=4, d=3, seed=0, spatial=5)
    s.add("<h3>BatchNorm backward</h3>", Markup(f"<pre>{esc(BN_EQUATIONS)}</pre>"),
          table(["case", "y (forward)", "∂l/∂x", "∂l/∂γ", "∂l/∂β", "max error"],
                [[name, *[f"{d[q]:.1e}" for q in ("out", "dx", "dgamma", "dbeta")], f"{max(d.values()):.1e}"]
                 for name, d in (("BatchNorm1d (16×8)", bn1), ("BatchNorm2d (4×3×5×5)", bn2))]))
    sx = check_softmax_xent(n=16, c=k, seed=0)
    s.add("<h3>Softmax cross-entropy gradient</h3>", Markup(f"<pre>{esc(XENT_EQUATIONS)}</pre>"),
          table(["case", "loss", "∂l/∂z", "max error"],
                [[f"16 faces × {k} classes", f"{sx['loss']:.1e}", f"{sx['grad']:.1e}", f"{max(sx.values()):.1e}"]]))
    worst = max([*bn1.values(), *bn2.values(), *sx.values()])
    s.add(Markup(f'<p class="small">Largest |hand-derived − autograd| of all checks: {worst:.1e} '
                 "(float64 rounding is about 1e-15).</p>"))
    return s
