"""``python -m fer_core import``: a model (or predictions) made elsewhere -> a run directory.

Why validate first and write last: a half-imported run would be listed by the dashboard as a
broken run. Everything -- the file's format, trust, the probe, the classes, the history, the
predictions, the data spec -- is checked and built in a hidden temporary folder beside the target,
the result is loaded back through :class:`fer_core.model.LoadedRun` and compared with the probe,
and only then is the folder renamed into place (one atomic ``os.rename``). Any failure removes the
temporary folder: nothing is left on disk.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from fer_core.foreign.adapter import class_mapping
from fer_core.foreign.formats import (ForeignModelError, OnnxForward, detect_format, export_input_shape,
                                      load_torch_module, onnx_input_shape)
from fer_core.foreign.probe import InputSpec, from_shape, make_preprocess, output_kind, run_probe
from fer_core.labels import EMOTIONS
from fer_core.runs import write_config

MODEL_FILE = {"torchscript": "model.pt", "export": "model.pt2", "onnx": "model.onnx", "pickle": "model.pkl.pt"}


@dataclass
class ImportResult:
    run: Path
    probe: str                 # what the probe found, e.g. "NHWC 1×48×48 input, outputs probabilities, 7 classes"
    notes: list[str]


def _parse_classes(text: str | Sequence[str] | None) -> list[str] | None:
    if text is None:
        return None
    names = [c.strip() for c in (text.split(",") if isinstance(text, str) else text) if c.strip()]
    if len(set(names)) != len(names) or not names:
        raise ForeignModelError(f"--classes must be distinct names separated by commas, got {text!r}")
    return names


def _state_dict_file(path: Path) -> str:
    return "weights.safetensors" if path.suffix == ".safetensors" else "weights.pt"


def import_model(model: str | os.PathLike[str] | None, name: str, *, out: str | os.PathLike[str] = "runs",
                 input: str | None = None, layout: str | None = None, value_range: str = "unit",
                 mean: float | None = None, std: float | None = None, classes: str | Sequence[str] | None = None,
                 data: str | None = None, history: str | os.PathLike[str] | None = None,
                 predictions: str | os.PathLike[str] | None = None, split: str = "test",
                 code: str | None = None, kwargs: dict[str, Any] | None = None,
                 trust_code: bool = False) -> ImportResult:
    """Validate and write the run ``out/name``; see the module docstring. Raises ForeignModelError
    (a ValueError) or ValueError with a message naming what is wrong."""
    if not name or "/" in name or name.startswith("."):
        raise ForeignModelError(f"--name must be a plain folder name, got {name!r}")
    root = Path(out)
    target = root / name
    if target.exists():
        raise ForeignModelError(f"a run named {name!r} already exists at {target}; choose another --name")
    if model is None and predictions is None:
        raise ForeignModelError("give a model file, or --predictions FILE.csv for a predictions-only run")
    if layout is not None and layout not in ("nchw", "nhwc"):
        raise ForeignModelError(f"--layout must be nchw or nhwc, not {layout!r}")
    declared = _parse_classes(classes)
    notes: list[str] = []
    config: dict[str, Any] = {"created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "finished": True,
                              "data": data or "", "synthetic": bool(data and data.startswith("synthetic")),
                              "train": {"val_fraction": 0.1, "seed": 0, "data": data or ""}}
    if data:
        from fer_core.rundata import data_ref

        config["data_ref"] = data_ref(data)
    probe_text = "no model (predictions only)"
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.importing-", dir=root))
    try:
        if model is not None:
            probe_text = _import_model_file(Path(model), tmp, config, spec_text=input, layout=layout,
                                            value_range=value_range, mean=mean, std=std, declared=declared,
                                            code=code, kwargs=kwargs, trust_code=trust_code, notes=notes)
        else:
            names = declared or list(EMOTIONS)
            config.update(kind="predictions", model="(predictions only)", classes=names,
                          predictions_source=Path(predictions).name, preprocess={"size": 48})  # type: ignore[arg-type]
        write_config(tmp, config)
        if history is not None:
            from fer_core.foreign.history import read_history, write_history

            h = read_history(history)
            write_history(tmp, h)
            notes.append(f"history: {len(h.frame)} epochs ({h.kind})"
                         + (f"; kept extra columns {', '.join(h.extra)}" if h.extra else ""))
        if predictions is not None:
            from fer_core.foreign.predictions import import_predictions

            notes.append(import_predictions(Path(predictions), tmp, config, split=split))
        if model is not None:
            _check_loads_back(tmp)
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ImportResult(run=target, probe=probe_text, notes=notes)


def _import_model_file(path: Path, tmp: Path, config: dict[str, Any], *, spec_text: str | None, layout: str | None,
                       value_range: str, mean: float | None, std: float | None, declared: list[str] | None,
                       code: str | None, kwargs: dict[str, Any] | None, trust_code: bool,
                       notes: list[str]) -> str:
    fmt = detect_format(path)
    code_ref = None
    if fmt == "onnx":
        call: Any = OnnxForward(path)
        stated = from_shape(onnx_input_shape(path))
    else:
        if fmt == "state_dict" and code and trust_code:
            code_ref = _copy_code(code, tmp)  # the run keeps its own copy of the class's file
        net = load_torch_module(path, fmt, code=code_ref or code, kwargs=kwargs, trust_code=trust_code,
                                code_base=tmp)
        call = net
        stated = from_shape(export_input_shape(net, path)) if fmt == "export" else None
    if spec_text is not None:
        spec = InputSpec.parse(spec_text, layout)
    elif stated is not None:
        spec = stated if layout is None else InputSpec(stated.channels, stated.size, layout)
        notes.append(f"input read from the model: {stated.describe()}")
    else:
        spec = InputSpec(1, 48, layout or "nchw")
    preprocess = make_preprocess(spec, value_range, mean, std)
    try:
        raw = run_probe(call, spec, preprocess)
    except Exception as exc:  # noqa: BLE001 - the probe's job is to turn any failure into advice
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ForeignModelError(f"the model does not accept a batch of {spec.describe()} ({type(exc).__name__}: "
                                f"{msg[:300]}); declare its input with --input CxHxW and --layout nchw|nhwc") from None
    width = raw.shape[1]
    model_classes = declared or (list(EMOTIONS) if width == len(EMOTIONS) else None)
    if model_classes is None or len(model_classes) != width:
        n = len(model_classes) if model_classes else len(EMOTIONS)
        raise ForeignModelError(f"the model outputs {width} values per face but {n} classes are "
                                f"{'declared' if declared else 'expected (FER2013 order by default)'}; "
                                "name them in output order with --classes a,b,c")
    out_kind = output_kind(raw)
    run_classes, columns, dropped = class_mapping(model_classes)
    if dropped:
        notes.append(f"classes {', '.join(dropped)} dropped (probabilities renormalised over the FER2013 seven)")
    dst = MODEL_FILE.get(fmt) or _state_dict_file(path)
    if fmt == "onnx":
        import onnx

        # one self-contained file: weights kept as external data beside the graph are pulled in
        onnx.save_model(onnx.load(str(path)), str(tmp / dst), save_as_external_data=False)
    else:
        shutil.copyfile(path, tmp / dst)
    config.update(kind="foreign", model=f"imported {fmt}: {path.name}", classes=run_classes,
                  preprocess=preprocess.to_dict(),
                  foreign={"format": fmt, "file": dst, "source": path.name, "code": code_ref,
                           "kwargs": kwargs or {}, "trust_code": bool(trust_code and fmt in ("state_dict", "pickle")),
                           "input": {"channels": spec.channels, "size": spec.size, "layout": spec.layout},
                           "range": value_range, "output": out_kind, "model_classes": model_classes,
                           "columns": columns, "dropped": dropped})
    probe = f"{spec.describe()}, outputs {'probabilities' if out_kind == 'probs' else 'logits'}, " \
            f"{len(run_classes)} classes"
    config["foreign"]["probe"] = probe
    config["_probe_raw"] = raw.tolist()  # checked against the loaded run, then removed
    return probe


def _copy_code(code: str, tmp: Path) -> str:
    """Copy the user's ``FILE.py`` into the run (so the run does not depend on where it was) and
    return the reference stored in config.json (``code/FILE.py:Class``)."""
    file, cls = code.rsplit(":", 1) if ":" in code else (code, "")
    src = Path(file)
    if not src.is_file() or not cls:
        raise ForeignModelError(f"--code expects FILE.py:ClassName with an existing file, got {code!r}")
    (tmp / "code").mkdir(exist_ok=True)
    shutil.copyfile(src, tmp / "code" / src.name)
    return f"code/{src.name}:{cls}"


def _check_loads_back(tmp: Path) -> None:
    """Load the written run like any page would and compare with what the probe saw."""
    from fer_core.foreign.probe import probe_faces
    from fer_core.model import LoadedRun
    from fer_core.runs import read_config

    cfg = read_config(tmp)
    raw = np.asarray(cfg.pop("_probe_raw"), dtype=np.float64)
    write_config(tmp, cfg)
    m = LoadedRun(tmp)
    got = m.probs(probe_faces().numpy())
    f = cfg["foreign"]
    ref = torch.as_tensor(raw)
    ref = ref.clamp_min(1e-12).log() if f["output"] == "probs" else ref
    if f["columns"] is not None:
        ref = ref[:, f["columns"]]
    want = torch.softmax(ref, 1).numpy()
    if not np.allclose(got, want, atol=1e-4):
        raise ForeignModelError(f"the imported run does not reproduce the model's output "
                                f"(max |Δp| {np.abs(got - want).max():.2g}); please report this")
    if m.model is not None and m.source.forward is not None:
        # an ONNX graph converted for gradients must compute what ONNX Runtime computes
        with torch.no_grad():
            conv = torch.softmax(m.model(m.inputs(probe_faces().numpy())), 1).numpy()
        if not np.allclose(conv, got, atol=1e-4):
            f["gradients"] = False
            f["no_gradients"] = (f"the torch module onnx2torch made from this graph differs from ONNX Runtime "
                                 f"(max |Δp| {np.abs(conv - got).max():.2g}), so gradient methods are off")
            write_config(tmp, cfg)
    json.dumps(cfg)  # plain types only
