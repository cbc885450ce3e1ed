"""Command line: ``python -m fer_core {train,ensemble,evaluate,predict,export,quantize,import,history,report,models,summary,synth}``.

Results go to stdout (a run directory, one JSON line, a table); progress and messages go to
stderr, so the output can be piped. Bad input ends with a one-line error and exit code 2, not a
traceback.

Why one file over the usual size: it is the parser plus one thin ``cmd_*`` function per
subcommand (each only calls into the package and prints), and keeping them together keeps every
option, its help text and its handler side by side.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

from fer_core.train_config import TrainConfig


def _kv(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--model-kw expects key=value, got {item!r}")
        k, v = item.split("=", 1)
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def _progress_printer(quiet: bool):
    """tqdm bar per epoch on a terminal; one line per epoch otherwise; nothing with --quiet."""
    if quiet:
        return None
    from tqdm.auto import tqdm

    tty = sys.stderr.isatty()
    state: dict[str, Any] = {"bar": None}

    def report(ev: dict[str, Any]) -> None:
        if ev["kind"] == "batch" and tty:
            if state["bar"] is None:
                state["bar"] = tqdm(total=ev["steps"], desc=f"epoch {ev['epoch']}", leave=False,
                                    file=sys.stderr, dynamic_ncols=True)
            bar = state["bar"]
            bar.update(ev["step"] - bar.n)
            bar.set_postfix(loss=f"{ev['loss']:.3f}", acc=f"{ev['acc']:.3f}", refresh=False)
        elif ev["kind"] == "epoch":
            if state["bar"] is not None:
                state["bar"].close()
                state["bar"] = None
            print(f"epoch {ev['epoch']:3d}  train_loss {ev['train_loss']:.4f} acc {ev['train_acc']:.4f}  "
                  f"val_loss {ev['val_loss']:.4f} acc {ev['val_acc']:.4f}  lr {ev['lr']:.2e}  "
                  f"{ev['time_s']:.0f}s", file=sys.stderr, flush=True)
        elif ev["kind"] == "teacher_targets":
            how = f"computed in {ev['seconds']:.0f}s" if ev["computed"] else "reused from the run"
            print(f"teacher targets for {ev['n']} training faces: {how} (--kd-cache)", file=sys.stderr, flush=True)
        elif ev["kind"] == "early_stop":
            print(f"early stop at epoch {ev['epoch']} (best epoch {ev['best_epoch']})", file=sys.stderr)

    return report


def cmd_train(a: argparse.Namespace) -> int:
    import os

    from fer_core.evaluate import evaluate_run
    from fer_core.runs import read_config
    from fer_core.train import fit

    if a.resume:
        run = fit(resume=a.resume, progress=_progress_printer(a.quiet), max_epochs=a.epochs, threads=a.threads)
    else:
        names = {f.name for f in fields(TrainConfig)}
        kw = {k: v for k, v in vars(a).items() if k in names and v is not None}
        kw["model_kwargs"] = _kv(a.model_kw or [])
        cfg = TrainConfig(**kw)
        run = fit(cfg, run_dir=Path(a.out) / a.name if a.name else None, runs_root=a.out,
                  progress=_progress_printer(a.quiet))
    if int(os.environ.get("RANK", "0")) == 0:
        if (relabel := read_config(run).get("relabel")) is not None:
            from fer_core.dataset.relabel import relabel_line
            print(relabel_line(relabel), file=sys.stderr)
        if not a.no_eval:
            for split in ("val", "test"):
                try:
                    r = evaluate_run(run, split=split)
                    print(f"{split}: accuracy {r['accuracy']:.4f} macro_f1 {r['macro_f1']:.4f} (n={r['n']})",
                          file=sys.stderr)
                except ValueError as exc:  # e.g. a source with no test split
                    print(f"{split}: not evaluated ({exc})", file=sys.stderr)
        print(run)
    return 0


def cmd_ensemble(a: argparse.Namespace) -> int:
    """``python -m fer_core ensemble RUN1 RUN2 … --name NAME``: progress on stderr, the run dir last on stdout."""
    from fer_core.ensemble import create_ensemble

    run = create_ensemble(a.members, a.name, out=a.out, weights=a.weights,
                          log=lambda msg: print(msg, file=sys.stderr, flush=True))
    print(run)
    return 0


def cmd_evaluate(a: argparse.Namespace) -> int:
    from fer_core.evaluate import evaluate_run
    from fer_core.runs import read_config

    if a.tta is None:  # the run's own choice, made on validation data (fer_core.evaluate.choose_tta)
        a.tta = read_config(a.run).get("eval_tta", "none")
    r = evaluate_run(a.run, data=a.data, split=a.split, tta=a.tta, which=a.checkpoint, ferplus=a.ferplus)
    if "ferplus" in r:
        f = r["ferplus"]
        print(f"FER+: of {f['with_votes']} errors with crowd votes, the FER+ majority agrees with the model "
              f"on {f['ferplus_agrees_with_model']} ({f['share_model_right']:.1%}) and with the FER2013 "
              f"label on {f['ferplus_agrees_with_label']}", file=sys.stderr)
    print(f"{a.split}: accuracy {r['accuracy']:.4f}  macro_f1 {r['macro_f1']:.4f}  ece {r['ece']:.4f}  "
          f"n={r['n']}  tta={a.tta}", file=sys.stderr)
    print(json.dumps({k: r[k] for k in ("split", "accuracy", "macro_f1", "ece", "n", "tta", "data")}))
    return 0


def cmd_models(a: argparse.Namespace) -> int:
    from fer_core.models import create_model, list_models, model_info
    from fer_core.models.summary import total_params

    print(f"{'name':18s} {'params':>12s}  input   description")
    for name in list_models():
        m = create_model(name)
        print(f"{name:18s} {total_params(m):12,d}  1×{m.input_size}×{m.input_size}  {model_info(name).description}")
    return 0


def cmd_summary(a: argparse.Namespace) -> int:
    from fer_core.models import create_model
    from fer_core.models.summary import format_table, summarize
    from fer_core.model import LoadedRun
    from fer_core.runs import is_run_dir

    if is_run_dir(Path(a.model)):
        model = LoadedRun(a.model).module()
    else:
        model = create_model(a.model, **_kv(a.model_kw or []))
    rows = summarize(model)
    print(format_table(rows))
    return 0 if all(r.ok is not False for r in rows) else 1


def cmd_synth(a: argparse.Namespace) -> int:
    from PIL import Image

    from fer_core.data import open_dataset

    faces = open_dataset(f"synthetic:n={a.n},seed={a.seed}")
    out = Path(a.out)
    for i in range(len(faces)):
        d = out / faces.split[i] / faces.classes[int(faces.y[i])]
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(faces.x[i].numpy(), mode="L").save(d / f"synth_{int(faces.row[i]):06d}.png")
    print(f"wrote {len(faces)} SynthFER (synthetic) faces to {out}/<split>/<emotion>/", file=sys.stderr)
    print(out)
    return 0


def prediction_records(file: str, pred: Any) -> list[dict[str, Any]]:
    """``predict``'s JSON objects for one image (``pred``: a :class:`fer_core.live.faces.Prediction`):
    one per face, or one with ``box: null`` + ``error`` when it has no face."""
    from fer_core.live.faces import NO_FACE

    if not pred.faces:
        return [{"file": file, "box": None, "error": pred.error or NO_FACE}]
    out = []
    for f in pred.faces:
        rec: dict[str, Any] = {"file": file,
                               "box": list(f.box) if f.box is not None else [0, 0, *pred.image_size],
                               "probs": f.probs_dict(), "top": f.top}
        if f.box is None:
            rec["whole_image"] = True
        out.append(rec)
    return out


def cmd_predict(a: argparse.Namespace) -> int:
    """``python -m fer_core predict RUN IMAGE… [--detector NAME] [--whole-image]``.

    One JSON line per face on stdout; an unreadable file or a file with no face gives one line
    with ``"box": null`` and ``"error"``, and the remaining files go on. The model is loaded once.
    Exit code 0 when every file could be read, 1 when at least one could not (no face is not a
    failure), 2 for a bad run directory or detector name (raised to :func:`main`).
    """
    from fer_core.live.faces import ImageError, load_image
    from fer_core.model import LoadedRun

    predictor = LoadedRun(a.run, detector=getattr(a, "detector", None))
    predictor.get_detector()  # an unknown detector name is an error before any file is read
    whole = bool(getattr(a, "whole_image", False))
    bad = 0
    for file in a.images:
        try:
            pred = predictor.predict(load_image(file), whole_image=whole)
            recs = prediction_records(file, pred)
        except ImageError as exc:
            bad += 1
            recs = [{"file": file, "box": None, "error": str(exc)}]
        except Exception as exc:  # noqa: BLE001 - one bad file must not stop the batch
            bad += 1
            recs = [{"file": file, "box": None, "error": f"{type(exc).__name__}: {exc}"}]
        for r in recs:
            sys.stdout.write(json.dumps(r) + "\n")
        sys.stdout.flush()
    if bad:
        print(f"{bad} of {len(a.images)} file(s) could not be read", file=sys.stderr)
    return 1 if bad else 0


def cmd_import(a: argparse.Namespace) -> int:
    from fer_core.foreign.importer import import_model

    try:
        kwargs = json.loads(a.kwargs) if a.kwargs else None
    except json.JSONDecodeError as exc:
        raise ValueError(f"--kwargs is not valid JSON ({exc})") from None
    if kwargs is not None and not isinstance(kwargs, dict):
        raise ValueError("--kwargs must be a JSON object, e.g. '{\"channels\": [64, 128, 512]}'")
    r = import_model(a.model, a.name, out=a.out, input=a.input, layout=a.layout, value_range=a.range,
                     mean=a.mean, std=a.std, classes=a.classes, data=a.data, history=a.history,
                     predictions=a.predictions, split=a.split, code=a.code, kwargs=kwargs, trust_code=a.trust_code)
    print(f"probe: {r.probe}", file=sys.stderr)
    for note in r.notes:
        print(note, file=sys.stderr)
    if a.data and a.model and not a.predictions and not a.no_eval:
        from fer_core.evaluate import evaluate_run

        for split in ("val", "test"):
            try:
                ev = evaluate_run(r.run, split=split)
                print(f"{split}: accuracy {ev['accuracy']:.4f} macro_f1 {ev['macro_f1']:.4f} (n={ev['n']})",
                      file=sys.stderr)
            except (ValueError, RuntimeError) as exc:  # e.g. no such split in the data
                print(f"{split}: not evaluated ({exc})", file=sys.stderr)
    print(r.run)
    return 0


def cmd_export(a: argparse.Namespace) -> int:
    from fer_core.live.onnx_runtime import OnnxUnavailable, save_onnx

    try:
        info = save_onnx(a.run, a.out, which=a.checkpoint, probs=not a.logits)
    except OnnxUnavailable as exc:
        raise RuntimeError(str(exc)) from exc
    print(f"wrote {info['bytes'] / 1e6:.1f} MB, max |difference| vs PyTorch {info['max_abs_diff']:.1e}; "
          f"input x: N×1×S×S standardised as in metadata fer_studio.preprocess, output {info['fer_studio.output']}",
          file=sys.stderr)
    print(json.dumps(info))
    return 0


def cmd_quantize(a: argparse.Namespace) -> int:
    """``python -m fer_core quantize RUN``: the run's int8 live graph (RUN/live_int8.onnx)."""
    from fer_core.live.quantize import quantize_with_data

    info = quantize_with_data(a.run, a.data, n_calib=a.n_calib, n_check=a.n_check)
    print(f"wrote {info['path']} ({info['bytes'] / 1e6:.2f} MB), calibrated on {info['calibration_faces']} "
          f"training faces; on {info['check_faces']} validation faces its top class agrees with the fp32 "
          f"model on {info['top1_agreement']:.2%} (mean |Δp| {info['mean_abs_diff']:.4f})", file=sys.stderr)
    print(json.dumps(info))
    return 0


def cmd_history(a: argparse.Namespace) -> int:
    """``python -m fer_core history RUN PATH``: PATH's curves replace RUN's metrics.csv."""
    from fer_core.foreign.history import import_history

    h = import_history(a.run, a.path)
    print(h.describe(), file=sys.stderr)
    for note in h.notes:
        print(f"note: {note}", file=sys.stderr)
    print(a.run)
    return 0


def cmd_report(a: argparse.Namespace) -> int:
    """``python -m fer_core report RUN``: the run's whole analysis as one self-contained file.

    Progress goes to stderr, the written path to stdout.
    """
    from fer_core.report import write_report

    fmt = a.format
    out = a.out or f"report.{fmt}"

    def progress(frac: float, message: str) -> None:
        print(f"[{frac:4.0%}] {message}", file=sys.stderr, flush=True)

    path = write_report(a.run, out, fmt=fmt, data=a.data, compare=a.compare or (), split=a.split,
                        progress=None if a.quiet else progress)
    print(path)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m fer_core", description="FER Studio command line")
    sub = p.add_subparsers(dest="cmd", required=True)
    d = TrainConfig()

    t = sub.add_parser("train", help="train a model; prints the run directory")
    t.add_argument("--data", default=None, help=f"dataset spec (default {d.data})")
    t.add_argument("--model", default=None, help=f"registry name (default {d.model}); see `models`")
    t.add_argument("--model-kw", nargs="*", metavar="KEY=VALUE", help="model kwargs, JSON values")
    t.add_argument("--epochs", type=int, default=None)
    t.add_argument("--batch-size", type=int, default=None)
    t.add_argument("--optimizer", choices=["adam", "adamw", "sgd"], default=None)
    t.add_argument("--lr", type=float, default=None)
    t.add_argument("--momentum", type=float, default=None)
    t.add_argument("--weight-decay", type=float, default=None)
    t.add_argument("--schedule", choices=["cosine", "plateau", "none"], default=None)
    t.add_argument("--warmup-epochs", type=float, default=None)
    t.add_argument("--label-smoothing", type=float, default=None)
    t.add_argument("--mixup", type=float, default=None, help="mixup Beta alpha (0 = off)")
    t.add_argument("--ema", type=float, default=None, help="weight EMA decay per step (0 = off)")
    t.add_argument("--normalize", action=argparse.BooleanOptionalAction, default=None,
                   help="standardise inputs with the training set's mean/std (default on)")
    t.add_argument("--aug", choices=["none", "basic", "strong"], default=None)
    t.add_argument("--early-stop", type=int, default=None, metavar="PATIENCE")
    t.add_argument("--seed", type=int, default=None)
    t.add_argument("--split-seed", type=int, default=None,
                   help="seed of the train/val slice (default: --seed); keep it fixed across ensemble members")
    t.add_argument("--val-fraction", type=float, default=None)
    t.add_argument("--skip-bad-rows", action="store_true", default=None)
    t.add_argument("--ferplus", default=None, help="FER+ fer2013new.csv to attach crowd votes")
    t.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default=None)
    t.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None)
    t.add_argument("--bf16", choices=["auto", "on", "off"], default=None)
    t.add_argument("--threads", type=int, default=None)
    t.add_argument("--time-budget-min", type=float, default=None,
                   help="cosine schedule over this many minutes of training, then stop (--epochs is the cap)")
    t.add_argument("--teacher", default=None, metavar="RUN",
                   help="distil this run's soft targets (any run, an ensemble too) into the new model")
    t.add_argument("--kd-t", type=float, default=None, help=f"distillation temperature (default {d.kd_t})")
    t.add_argument("--kd-cache", action="store_true", default=None,
                   help="run the teacher once per training face (un-augmented) instead of on every batch")
    t.add_argument("--kd-alpha", type=float, default=None,
                   help=f"weight of the soft-target term, 1 - it on the labels' CE (default {d.kd_alpha})")
    t.add_argument("--relabel", default=None, metavar="FILE.csv",
                   help="triage CSV (row,kind,new_label; the dashboard's export) applied to the training faces")
    t.add_argument("--out", default="runs", help="folder for new runs (default runs/)")
    t.add_argument("--name", default=None, help="run directory name (default model-timestamp)")
    t.add_argument("--resume", default=None, metavar="RUN_DIR", help="continue a run from last.pt")
    t.add_argument("--no-eval", action="store_true", help="skip the val/test evaluation at the end")
    t.add_argument("--quiet", action="store_true")
    t.set_defaults(func=cmd_train)

    en = sub.add_parser("ensemble", help="make one run of several runs' averaged probabilities; prints its directory")
    en.add_argument("members", nargs="+", metavar="RUN", help="member runs (same classes, input size and data split)")
    en.add_argument("--name", required=True, help="run directory name")
    en.add_argument("--out", default="runs", help="folder for the run (default runs/)")
    en.add_argument("--weights", default="auto", metavar="auto|equal|W1,W2,…",
                    help="auto (default): chosen on the validation split; equal; or one number per member")
    en.set_defaults(func=cmd_ensemble)

    e = sub.add_parser("evaluate", help="evaluate a run; last stdout line is JSON")
    e.add_argument("run")
    e.add_argument("--data", default=None, help="another dataset spec (the run's own by default)")
    e.add_argument("--split", default="test", choices=["train", "val", "test"])
    e.add_argument("--tta", default=None, choices=["none", "flip", "tencrop"],
                   help="test-time augmentation (default: the run's eval_tta, chosen on validation "
                        "data when the run was shipped; else none)")
    e.add_argument("--checkpoint", default="best", choices=["best", "last"])
    e.add_argument("--ferplus", default=None, help="FER+ fer2013new.csv: attach crowd votes and report on them")
    e.set_defaults(func=cmd_evaluate)

    pr = sub.add_parser("predict", help="classify the faces in images; one JSON line per face")
    pr.add_argument("run")
    pr.add_argument("images", nargs="+")
    pr.add_argument("--detector", default=None)
    pr.add_argument("--whole-image", action="store_true", help="classify the whole image as one face when none is found")
    pr.set_defaults(func=cmd_predict)

    ex = sub.add_parser("export", help="write a run's model as ONNX (preprocessing + classes in its metadata)")
    ex.add_argument("run")
    ex.add_argument("out", help="output .onnx file")
    ex.add_argument("--checkpoint", default="best", choices=["best", "last"])
    ex.add_argument("--logits", action="store_true", help="output logits instead of probabilities")
    ex.set_defaults(func=cmd_export)

    qu = sub.add_parser("quantize", help="make the run's int8 live classifier (RUN/live_int8.onnx, ONNX "
                                         "Runtime static quantization calibrated on its training faces)")
    qu.add_argument("run")
    qu.add_argument("--data", default=None, help="dataset file when the run's own is not found (FER_DATA)")
    qu.add_argument("--n-calib", type=int, default=1000, help="training faces for calibration (seeded sample)")
    qu.add_argument("--n-check", type=int, default=2000, help="validation faces for the agreement check")
    qu.set_defaults(func=cmd_quantize)

    im = sub.add_parser("import", help="make a run of a model trained elsewhere (TorchScript, torch.export, "
                                       "ONNX, state_dict + code) or of its predictions; prints the run directory")
    im.add_argument("model", nargs="?", default=None, help="model file (format detected from its content)")
    im.add_argument("--name", required=True, help="run directory name")
    im.add_argument("--out", default="runs", help="folder for the run (default runs/)")
    im.add_argument("--input", default=None, metavar="CxHxW",
                    help="input channels x height x width (default: from the model where it says, else 1x48x48)")
    im.add_argument("--layout", choices=["nchw", "nhwc"], default=None,
                    help="tensor layout (default: from the model's input shape where it says, else nchw)")
    im.add_argument("--range", choices=["unit", "255", "standard"], default="unit",
                    help="input values: unit = pixels/255 (default), 255 = raw pixels, standard = (pixels/255-mean)/std")
    im.add_argument("--mean", type=float, default=None, help="with --range standard")
    im.add_argument("--std", type=float, default=None, help="with --range standard")
    im.add_argument("--classes", default=None, help="output class names in order, comma-separated "
                                                    "(default: FER2013's 7; FER+ names are mapped, contempt dropped)")
    im.add_argument("--data", default=None, help="dataset spec to evaluate on (the Errors page's faces)")
    im.add_argument("--history", default=None, help="training log: Keras/Lightning CSV, Keras JSON, TensorBoard dir")
    im.add_argument("--predictions", default=None, help="CSV of per-face predictions (row, label, probabilities)")
    im.add_argument("--split", default="test", choices=["train", "val", "test"], help="split of --predictions")
    im.add_argument("--code", default=None, metavar="FILE.py:Class", help="the network's class for a state_dict")
    im.add_argument("--kwargs", default=None, metavar="JSON", help="keyword arguments for the class")
    im.add_argument("--trust-code", action="store_true",
                    help="allow running your code (--code) or unpickling a whole pickled model")
    im.add_argument("--no-eval", action="store_true", help="skip evaluating on --data after the import")
    im.set_defaults(func=cmd_import)

    hi = sub.add_parser("history", help="read a training log (Keras/Lightning CSV, Keras JSON, TensorBoard) "
                                        "into a run's metrics.csv")
    hi.add_argument("run", help="the run directory")
    hi.add_argument("path", help="the log file or folder (TensorBoard log dir, Lightning version_N)")
    hi.set_defaults(func=cmd_history)

    rp = sub.add_parser("report", help="write a run's whole analysis as one self-contained HTML (or PDF) file")
    rp.add_argument("run")
    rp.add_argument("--data", default=None, metavar="PATH",
                    help="your copy of the run's data (file or folder; default $FER_DATA); SynthFER regenerates")
    rp.add_argument("--compare", nargs="*", default=[], metavar="RUN", help="runs overlaid in the history section")
    rp.add_argument("--out", default=None, help="output file (default report.html / report.pdf)")
    rp.add_argument("--split", default="test", choices=["train", "val", "test"],
                    help="split of the confusion, saliency and filter sections")
    rp.add_argument("--format", default="html", choices=["html", "pdf"],
                    help="pdf: Chromium's print-to-PDF via Playwright (needs both installed)")
    rp.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    rp.set_defaults(func=cmd_report)

    sub.add_parser("models", help="list registered architectures").set_defaults(func=cmd_models)

    s = sub.add_parser("summary", help="layer table of a model (name or run dir)")
    s.add_argument("model")
    s.add_argument("--model-kw", nargs="*", metavar="KEY=VALUE")
    s.set_defaults(func=cmd_summary)

    sy = sub.add_parser("synth", help="write SynthFER faces as an image folder")
    sy.add_argument("--n", type=int, default=2000)
    sy.add_argument("--seed", type=int, default=0)
    sy.add_argument("--out", required=True)
    sy.set_defaults(func=cmd_synth)
    return p


def main(argv: list[str] | None = None) -> int:
    from fer_core.checkpoint import CheckpointError
    from fer_core.runs import RunError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, RuntimeError, CheckpointError, RunError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
