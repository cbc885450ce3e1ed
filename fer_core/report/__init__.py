"""One-command model report: the whole analysis of a run as ONE self-contained HTML file.

Why: what users of this tool hand in or share is a write-up -- architecture with layer sizes,
training history (and the runs it is compared with), the confusion matrix and what the model
confuses, saliency maps, what the deepest conv layer's filters respond to, and the hand-derived
math checked. :func:`build_report` writes all of it, in that order, each section opening with one
line on how it was computed (method, layer, split, number of faces).

How it stays honest and portable:

* Everything is computed by the core the dashboard uses (:class:`fer_core.model.LoadedRun`,
  :class:`fer_core.rundata.RunData`, :mod:`fer_core.evaluate`, :mod:`fer_core.gallery`,
  :mod:`fer_core.mathcheck`), so the report shows what the pages show.
* Figures are matplotlib (Agg) PNGs embedded as ``data:`` URIs: Plotly's static export would need
  kaleido, which downloads and drives its own Chrome; matplotlib renders offline in-process. The
  page has inline CSS, no script and no external reference, so it opens offline anywhere.
* A section that cannot be made here (the data file is not on this machine, a model without
  gradients, a predictions-only run with no model at all) says why instead of failing the report.
* ``pdf``: Chromium's print-to-PDF through Playwright (:mod:`fer_core.report.pdf`), when both are
  installed; otherwise a clear error.

>>> html = build_report("checkpoints/synth-cnn4-aug", compare=["checkpoints/synth-cnn4-plain"])
>>> write_report("checkpoints/synth-cnn4-aug", "report.html")
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from fer_core.report.html import SECTION_TITLES, Section, note, page

if TYPE_CHECKING:
    from fer_core.model import LoadedRun

__all__ = ["FORMATS", "SECTION_TITLES", "Progress", "build_report", "write_report"]

Progress = Callable[[float, str], None]
FORMATS = ("html", "pdf")

# (fraction done when the step starts, message, section key); the figures of 5-6 dominate
_STEPS = (
    (0.00, "loading the model and the faces", None),
    (0.15, "summary", "summary"),
    (0.20, "architecture", "architecture"),
    (0.25, "training history", "history"),
    (0.32, "confusion matrix", "confusion"),
    (0.42, "saliency maps", "saliency"),
    (0.62, "filter images", "filters"),
    (0.90, "math checks", "math"),
)


def _section(key: str, build: Callable[[], Section]) -> Section:
    """Build one section; an unexpected failure becomes its "why" note (the rest still renders)."""
    try:
        return build()
    except Exception as exc:  # noqa: BLE001 - one section must not take the whole report down
        return Section(key, "This section could not be made.").add(
            note(f"This section failed: {type(exc).__name__}: {exc}"))


def build_report(run: "str | os.PathLike[str] | LoadedRun", *, data: str | None = None,
                 compare: Sequence[str | os.PathLike[str]] = (), split: str = "test",
                 progress: Progress | None = None, faces: Any = None) -> str:
    """The report of ``run`` as one HTML string.

    ``run``: a run directory or its :class:`~fer_core.model.LoadedRun`. ``data``: the user's copy
    of the run's data (a file or folder, as the dashboard's data path; ``None`` = ``$FER_DATA``);
    SynthFER runs regenerate their faces. ``compare``: runs overlaid in the history section.
    ``split``: the split of sections 4-6. ``progress(fraction, message)`` is called as the
    sections are built. ``faces``: the run's FaceSet when the caller already has it open.
    Raises :class:`fer_core.runs.RunError` when ``run`` or a ``compare`` entry is not a run.
    """
    from fer_core.model import LoadedRun
    from fer_core.report.analysis import confusion_section, filters_section, saliency_section
    from fer_core.report.context import gather
    from fer_core.report.sections import architecture_section, history_section, math_section, summary_section
    from fer_core.runs import read_config

    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be train, val or test, not {split!r}")
    say = progress or (lambda f, m: None)
    t0 = time.perf_counter()
    others = [Path(c) for c in compare]
    for c in ([] if isinstance(run, LoadedRun) else [Path(run)]) + others:
        read_config(c)  # a mistyped run / --compare is an error now, not a silent gap in the report
    say(_STEPS[0][0], _STEPS[0][1])
    ctx = gather(run, data=data, split=split, faces=faces)
    builders: dict[str, Callable[[], Section]] = {
        "summary": lambda: summary_section(ctx),
        "architecture": lambda: architecture_section(ctx),
        "history": lambda: history_section(ctx, [c for c in others if c.resolve() != ctx.run.resolve()]),
        "confusion": lambda: confusion_section(ctx),
        "saliency": lambda: saliency_section(ctx),
        "filters": lambda: filters_section(ctx),
        "math": lambda: math_section(ctx),
    }
    sections = []
    for frac, message, key in _STEPS[1:]:
        say(frac, message)
        sections.append(_section(key, builders[key]))
    subtitle = [f"Model: {ctx.config.get('model', '?')} · data: {ctx.data_label} · report split: {split}",
                f"Run: {ctx.run.resolve().parent.name}/{ctx.run.name}"]  # no machine's absolute path
    html = page(f"FER Studio report — {ctx.run.name}", subtitle, sections,
                footer=f"Built by FER Studio on {time.strftime('%Y-%m-%d %H:%M')} in "
                       f"{time.perf_counter() - t0:.1f} s. Self-contained: every image is embedded; the file "
                       "fetches nothing.")
    say(1.0, "done")
    return html


def write_report(run: str | os.PathLike[str], out: str | os.PathLike[str], *, fmt: str = "html",
                 data: str | None = None, compare: Sequence[str | os.PathLike[str]] = (), split: str = "test",
                 progress: Progress | None = None) -> Path:
    """Build the report and write it atomically to ``out`` as HTML or PDF; returns the path."""
    from fer_core.checkpoint import atomic_write_bytes, atomic_write_text

    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    if fmt == "pdf":
        from fer_core.report.pdf import check_pdf_support

        check_pdf_support()  # fail before the build when the browser is missing
    html = build_report(run, data=data, compare=compare, split=split, progress=progress)
    out = Path(out)
    if fmt == "html":
        atomic_write_text(out, html)
    else:
        from fer_core.report.pdf import html_to_pdf

        pdf = html_to_pdf(html)
        atomic_write_bytes(out, lambda f: f.write(pdf))
    return out
