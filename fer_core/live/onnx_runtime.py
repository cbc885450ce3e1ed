"""ONNX export of a run's model and an ONNX Runtime classifier for live video.

Why ONNX Runtime for live frames: a webcam frame carries one or two 48×48 faces, and at batch 1
PyTorch eager spends much of a classification dispatching small ops. ONNX Runtime runs the
exported graph with BatchNorm folded and convolutions fused with their activations, and little
per-op overhead, so it is the cheapest backend per face (``bench/live.py --backend`` compares
them). Unlike bf16 it computes in fp32, so its probabilities match the PyTorch model within
:data:`MATCH_ATOL` (checked when a session is built, and tested). Uploads, ``predict`` and
evaluation keep using PyTorch: one exact reference path.

The export uses ``torch.onnx.export(dynamo=True)`` (the supported exporter; the TorchScript one is
deprecated) with a dynamic batch dimension and the softmax inside the graph, so one ``run`` call
returns probabilities as a NumPy array. Nothing is written to disk and nothing is unpickled: the
graph goes from memory to the session.

``python -m fer_core export RUN_DIR model.onnx`` (:func:`save_onnx`) writes the same graph to a file
for deployment, with the checkpoint's preprocessing and class names in the ONNX metadata.

Both packages are optional at import time: :func:`available` says whether this machine has them,
and :class:`OnnxClassifier` raises :class:`OnnxUnavailable` with the reason when it can't be built
(package missing, model not exportable, export not matching PyTorch), so callers can fall back.
"""

from __future__ import annotations

import contextlib
import io
import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

# The exporter's graph must reproduce the PyTorch probabilities this closely, or it is not used.
MATCH_ATOL = 1e-4


class OnnxUnavailable(RuntimeError):
    """ONNX Runtime can't serve this model here (the message says why)."""


def available() -> str | None:
    """None when ``onnxruntime`` + the exporter's ``onnxscript`` import, else the reason they don't."""
    try:
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as exc:
        return f"{exc.name or exc} is not installed (pip install -r requirements.txt)"
    return None


class _WithSoftmax(torch.nn.Module):
    """The model plus its softmax, so the exported graph returns probabilities directly."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(x), dim=1)


STACK_TRACE_KEY = "pkg.torch.onnx.stack_trace"


def drop_stack_traces(proto: Any) -> Any:
    """Remove the exporter's per-node Python stack traces from an ONNX ``ModelProto`` (in place).

    Why: ``torch.onnx.export(dynamo=True)`` stores, on every node, the traceback of the code that
    made it, with the absolute file paths of the exporting machine (its checkout, its venv). They
    are debugging aids only, they would ship inside every graph a run carries, and they make the
    bytes depend on where the project was installed. Node names, scopes and class hierarchies stay.
    """
    todo = [proto.graph, *proto.functions]
    while todo:
        g = todo.pop()
        for node in g.node:
            for i in reversed(range(len(node.metadata_props))):
                if node.metadata_props[i].key == STACK_TRACE_KEY:
                    del node.metadata_props[i]
            for a in node.attribute:            # If/Loop/Scan bodies
                todo.extend([a.g] if a.HasField("g") else [])
                todo.extend(a.graphs)
    return proto


def export_onnx(model: torch.nn.Module, input_size: int, *, in_chans: int = 1, probs: bool = True) -> bytes:
    """Serialise ``model`` (eval mode, on CPU, untouched) to ONNX bytes with a dynamic batch size.

    ``probs=True`` appends the softmax (output ``probs``), else the graph returns ``logits``.
    The exporter's INFO logging is silenced for the call; errors propagate.
    """
    import copy

    m = copy.deepcopy(model).eval().cpu().float()
    if probs:
        m = _WithSoftmax(m).eval()
    x = torch.zeros(2, in_chans, input_size, input_size)   # batch 2: the exporter specialises a batch of 1
    out_name = "probs" if probs else "logits"
    with _quiet_loggers():
        try:
            prog = torch.onnx.export(m, (x,), dynamo=True, input_names=["x"], output_names=[out_name],
                                     dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=1024)}},
                                     verbose=False, optimize=True)
            return drop_stack_traces(prog.model_proto).SerializeToString()
        except Exception as exc:  # noqa: BLE001 - e.g. an imported torch.export program's modules
            first = exc
        # the TorchScript-based exporter traces what torch.export cannot (unflattened programs)
        buf = io.BytesIO()
        try:
            torch.onnx.export(m, (x,), buf, dynamo=False, input_names=["x"], output_names=[out_name],
                              dynamic_axes={"x": {0: "batch"}}, opset_version=17)
        except Exception:  # noqa: BLE001
            if any(isinstance(sub, torch.jit.ScriptModule) for sub in m.modules()):
                raise RuntimeError("this run's model is a TorchScript module, which neither ONNX exporter "
                                   "can trace inside FER Studio's input adapter; export your original model "
                                   "to ONNX, or import it with torch.export (.pt2) or as a state_dict + its "
                                   "class") from first
            raise first from None
    return buf.getvalue()


@contextlib.contextmanager
def _quiet_loggers():
    """The exporter's passes log at INFO (e.g. "Removed 38 unused nodes"); keep them out of user logs."""
    names = ("torch.onnx", "torch.export", "onnxscript", "onnx_ir", "torch._dynamo",
             "torch.fx.experimental.symbolic_shapes")
    levels = {n: logging.getLogger(n).level for n in names}
    try:
        for n in names:
            logging.getLogger(n).setLevel(logging.ERROR)
        yield
    finally:
        for n, lv in levels.items():
            logging.getLogger(n).setLevel(lv)


def diff_vs_torch(session: Any, model: torch.nn.Module, input_size: int, *, in_chans: int = 1,
                  probs: bool = True) -> float:
    """Max |ONNX Runtime output - PyTorch output| on 3 seeded random inputs (probabilities, or
    logits with ``probs=False``). The model's train/eval mode is restored afterwards."""
    x = torch.randn(3, in_chans, input_size, input_size, generator=torch.Generator().manual_seed(0))
    was = model.training
    model.eval()
    try:
        with torch.inference_mode():
            ref = model(x)
            ref = torch.softmax(ref, dim=1) if probs else ref
    finally:
        model.train(was)
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    return float(np.abs(got - ref.numpy()).max())


def make_session(blob: bytes, threads: int = 1) -> Any:
    """An ONNX Runtime CPU session over a graph's bytes, tuned for batch-1 faces (see :class:`OnnxClassifier`)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    if threads > 1:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(blob, so, providers=["CPUExecutionProvider"])


class OnnxClassifier:
    """An ONNX Runtime session over a model's export: ``clf(x) -> probabilities`` (N×C float32).

    ``threads=1`` by default: one small face per frame gains nothing from intra-op threads, and
    spinning worker threads collapse when other work (the detector, the browser) shares two cores.
    ``InferenceSession.run`` is thread-safe, so one instance serves every stream.
    The constructor checks the session against the PyTorch model on a few inputs and raises
    :class:`OnnxUnavailable` when they differ by more than :data:`MATCH_ATOL`.
    """

    def __init__(self, model: torch.nn.Module, input_size: int, *, in_chans: int = 1, threads: int = 1) -> None:
        why = available()
        if why:
            raise OnnxUnavailable(why)
        try:
            blob = export_onnx(model, input_size, in_chans=in_chans)
        except Exception as exc:  # noqa: BLE001 - any exporter failure means "use PyTorch instead"
            raise OnnxUnavailable(f"the model could not be exported to ONNX ({type(exc).__name__}: "
                                  f"{str(exc).splitlines()[0] if str(exc) else ''})") from exc
        self.session = make_session(blob, threads)
        self.input_name = self.session.get_inputs()[0].name
        self.size_bytes = len(blob)
        self.max_abs_diff = diff_vs_torch(self.session, model, input_size, in_chans=in_chans)
        if not self.max_abs_diff <= MATCH_ATOL:
            raise OnnxUnavailable(f"the ONNX export differs from the PyTorch model by {self.max_abs_diff:.2g} "
                                  f"(> {MATCH_ATOL:g}) in probability")

    def __call__(self, x: np.ndarray | torch.Tensor) -> np.ndarray:
        """N×C×S×S float32 (NumPy or a CPU tensor) -> N×C probabilities (float32)."""
        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().numpy()
        x = np.ascontiguousarray(x, dtype=np.float32)
        return self.session.run(None, {self.input_name: x})[0]

    def __repr__(self) -> str:
        return f"OnnxClassifier({self.size_bytes / 1e6:.1f} MB graph, max |Δp| vs torch {self.max_abs_diff:.1e})"


def exportable_module(lm: Any) -> torch.nn.Module:
    """The torch module of a loaded run in the form the ONNX exporters take (an imported model's
    input adapter re-wrapped so that it traces)."""
    module = lm.module()
    if lm.kind == "foreign":
        from fer_core.foreign.kinds import export_module

        module = export_module(lm.run, lm.config, module)
    return module


def save_onnx(run: str | os.PathLike[str], out: str | os.PathLike[str], *, which: str = "best",
              probs: bool = True) -> dict[str, Any]:
    """Export a run's checkpoint to an ``.onnx`` file for deployment; returns what was written.

    The file carries the checkpoint's preprocessing and class names as ONNX metadata
    (``fer_studio.preprocess``, ``fer_studio.classes``, JSON), so a deployment reads them instead of
    re-typing mean/std by hand. The export is checked against the PyTorch model with ONNX Runtime
    before it is written, and written atomically (temp file + ``os.replace``): a failed export never
    leaves a half-written file behind.
    """
    why = available()
    if why:
        raise OnnxUnavailable(why)
    import json

    import onnx
    import onnxruntime as ort

    from fer_core.checkpoint import atomic_write_bytes
    from fer_core.model import LoadedRun

    lm = LoadedRun(run, which=which)
    module = exportable_module(lm)
    blob = export_onnx(module, lm.preprocess.size, probs=probs)
    proto = onnx.load_from_string(blob)
    meta = {"fer_studio.classes": json.dumps(list(lm.classes)),
            "fer_studio.preprocess": json.dumps(dataclasses.asdict(lm.preprocess)),
            "fer_studio.model": str(lm.config.get("model", "")),
            "fer_studio.run": Path(run).resolve().name,
            "fer_studio.checkpoint": f"{which} (epoch {lm.epoch})",
            "fer_studio.output": "probs" if probs else "logits"}
    for k, v in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    data = proto.SerializeToString()
    # check the bytes we are about to write, with ONNX Runtime, against PyTorch
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    diff = diff_vs_torch(sess, module, lm.preprocess.size, probs=probs)
    if not diff <= MATCH_ATOL * (1 if probs else 100):
        raise OnnxUnavailable(f"the ONNX export differs from the PyTorch model by {diff:.2g}; not written")
    out = Path(out)
    atomic_write_bytes(out, lambda f: f.write(data))
    return {"path": str(out), "bytes": len(data), "max_abs_diff": diff, **meta}
