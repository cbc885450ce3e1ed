"""Command line: ``python -m fer_core {train,evaluate,predict,export,models,summary,synth}``.

Results go to stdout (a run directory, one JSON line, a table); progress and messages go to
stderr, so the output can be piped. Bad input ends with a one-line error and exit code 2, not a
traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

from fer_core.train import TrainConfig


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
        elif ev["kind"] == "early_stop":
            print(f"early stop at epoch {ev['epoch']} (best epoch {ev['best_epoch']})", file=sys.stderr)

    return report


def cmd_train(a: argparse.Namespace) -> int:
    import os

    from fer_core.evaluate import evaluate_run
    from fer_core.train import fit

    if a.resume:
        run = fit(resume=a.resume, progress=_progress_printer(a.quiet), max_epochs=a.epochs)
    else:
        names = {f.name for f in fields(TrainConfig)}
        kw = {k: v for k, v in vars(a).items() if k in names and v is not None}
        kw["model_kwargs"] = _kv(a.model_kw or [])
        cfg = TrainConfig(**kw)
        run = fit(cfg, run_dir=Path(a.out) / a.name if a.name else None, runs_root=a.out,
                  progress=_progress_printer(a.quiet))
    if int(os.environ.get("RANK", "0")) == 0:
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
    from fer_core.runs import is_run_dir, load_model

    if is_run_dir(Path(a.model)):
        model = load_model(a.model).model
    else:
        model = create_model(a.model, **_kv(a.model_kw or []))
    rows = summarize(model)
    print(format_table(rows))
    return 0 if all(r.ok is not False for r in rows) else 1


def cmd_synth(a: argparse.Namespace) -> int:
    from PIL import Image

    from fer_core.data.sources import open_dataset

    faces = open_dataset(f"synthetic:n={a.n},seed={a.seed}")
    out = Path(a.out)
    for i in range(len(faces)):
        d = out / faces.split[i] / faces.classes[int(faces.y[i])]
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(faces.x[i].numpy(), mode="L").save(d / f"synth_{int(faces.row[i]):06d}.png")
    print(f"wrote {len(faces)} SynthFER (synthetic) faces to {out}/<split>/<emotion>/", file=sys.stderr)
    print(out)
    return 0


def cmd_predict(a: argparse.Namespace) -> int:
    from fer_core.predictor import main_predict  # added with the Live issue

    return main_predict(a)


def cmd_export(a: argparse.Namespace) -> int:
    from fer_core.onnx_runtime import OnnxUnavailable, save_onnx

    try:
        info = save_onnx(a.run, a.out, which=a.checkpoint, probs=not a.logits)
    except OnnxUnavailable as exc:
        raise RuntimeError(str(exc)) from exc
    print(f"wrote {info['bytes'] / 1e6:.1f} MB, max |difference| vs PyTorch {info['max_abs_diff']:.1e}; "
          f"input x: N×1×S×S standardised as in metadata fer_studio.preprocess, output {info['fer_studio.output']}",
          file=sys.stderr)
    print(json.dumps(info))
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
    t.add_argument("--val-fraction", type=float, default=None)
    t.add_argument("--skip-bad-rows", action="store_true", default=None)
    t.add_argument("--ferplus", default=None, help="FER+ fer2013new.csv to attach crowd votes")
    t.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default=None)
    t.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None)
    t.add_argument("--bf16", choices=["auto", "on", "off"], default=None)
    t.add_argument("--threads", type=int, default=None)
    t.add_argument("--time-budget-min", type=float, default=None,
                   help="cosine schedule over this many minutes of training, then stop (--epochs is the cap)")
    t.add_argument("--out", default="runs", help="folder for new runs (default runs/)")
    t.add_argument("--name", default=None, help="run directory name (default model-timestamp)")
    t.add_argument("--resume", default=None, metavar="RUN_DIR", help="continue a run from last.pt")
    t.add_argument("--no-eval", action="store_true", help="skip the val/test evaluation at the end")
    t.add_argument("--quiet", action="store_true")
    t.set_defaults(func=cmd_train)

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
