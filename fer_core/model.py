"""The one loaded-model object per checkpoint: :class:`LoadedRun`.

Why one object: a model is loaded once and then serves every caller -- all the dashboard's pages
and sessions (it sits in one ``st.cache_resource`` entry per checkpoint file version), the webcam's
frame thread, the CLI's ``predict`` / ``evaluate`` / ``export`` and the report. It owns the module,
the preprocessing stored with the run (never re-typed), the class names and ONE lock: PyTorch
modules are not safe to hook (attribution, feature visualisation) or mode-switch from two threads
at once, and at 48×48 a batch takes milliseconds, so serialising every use costs nothing that
matters. It holds no per-caller state (face tracks live in :class:`fer_core.live.stream.LiveProcessor`).

Why a loader registry (:func:`register_kind`): a run's model file is not always one of our registry
checkpoints. ``config.json``'s ``kind`` names how to load it (``"registry"`` by default); the
loader returns a :class:`ModelSource` -- a differentiable torch module taking the run's
standardised ``N×1×S×S`` faces and returning logits, or ``None`` with the reason there is none plus
a plain inference function. Every page asks this object for probabilities, a module for gradients
(or the reason there is none), and its conv layers by name, whatever stands behind it.

Why one file a little over the usual size: the class is the seam, and most of its methods are
three-line, locked delegations to :mod:`fer_core.explain` and :mod:`fer_core.live`; splitting it
would hide which operations share the lock.
"""

from __future__ import annotations

import copy
import functools
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn as nn

from fer_core.labels import EMOTIONS
from fer_core.preprocess import Preprocess
from fer_core.runs import checkpoint_file, read_config

# Attribution methods that hook the model's layers (not possible on TorchScript modules).
HOOKED_METHODS = ("gradcam", "guided_backprop")

# Why a non-registry run has no bf16 copy (its module is used as it is: copying or re-tracing an
# imported graph is not safe, and an ensemble's members keep their own preprocessing inside).
NO_BF16 = {"foreign": "imported models run as they were saved (fp32)",
           "ensemble": "an ensemble runs its members in fp32"}

# Classification backends (LoadedRun.classify): the PyTorch reference, PyTorch in bfloat16, ONNX Runtime.
BACKENDS = ("torch", "torch-bf16", "onnx", "onnx-int8")
LIVE_ORDER = ("onnx-int8", "onnx", "torch-bf16", "torch")   # fastest first


class ModelUnavailable(RuntimeError):
    """The run has no model this operation can use here (the message says why, in one sentence)."""


@dataclass
class ModelSource:
    """What a loader produces from a run directory.

    ``module``: standardised ``N×1×S×S`` faces -> logits (eval mode), or None when the model has
    no differentiable torch form, then ``reason`` says why and ``forward`` maps the same input to
    logits or log-probabilities (any tensor whose softmax is the probabilities; e.g. ONNX Runtime
    on the user's graph). ``describe`` is one line for the pages.
    """

    module: nn.Module | None
    checkpoint: Path
    epoch: int = 0
    reason: str | None = None
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None
    describe: str = ""


Loader = Callable[[Path, dict[str, Any], str, torch.device], ModelSource]
_KINDS: dict[str, Loader] = {}


def register_kind(name: str) -> Callable[[Loader], Loader]:
    """Register the loader of a run kind (``config.json`` ``"kind"``)."""

    def deco(fn: Loader) -> Loader:
        _KINDS[name] = fn
        return fn

    return deco


def run_kinds() -> list[str]:
    return sorted(_KINDS)


@register_kind("registry")
def load_registry_checkpoint(run: Path, config: dict[str, Any], which: str, device: torch.device) -> ModelSource:
    """Our own runs: rebuild the model from ``config.json`` and load ``best.pt``/``last.pt``
    (``weights_only=True``). Stored fp16 weights are cast to the model's fp32 parameters."""
    from fer_core.checkpoint import CheckpointError, load_checkpoint
    from fer_core.models import create_model

    path = checkpoint_file(run, which)
    ckpt = load_checkpoint(path, map_location="cpu")
    model = create_model(config["model"], num_classes=len(config.get("classes", [])) or 7,
                         **config.get("model_kwargs", {}))
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path} does not match model {config['model']!r}: {exc}") from None
    model.to(device).eval()
    return ModelSource(module=model, checkpoint=path, epoch=int(ckpt.get("epoch", 0)),
                       describe=f"{config['model']} (FER Studio registry)")


def _mtime_ns(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


class LoadedRun:
    """A run's model + preprocessing + classes + lock, shared by every caller.

    >>> m = LoadedRun("checkpoints/synth-cnn4-aug")
    >>> m.probs(faces_u8)                   # N×48×48 uint8 -> N×7 probabilities
    >>> m.attribute_faces(faces_u8, [3, 3], "gradcam")
    >>> m.predict(load_image("photo.jpg")).faces
    """

    def __init__(self, run: str | os.PathLike[str], *, which: str = "best", device: str = "cpu",
                 detector: Any = None) -> None:
        self.run = Path(run)
        self.which = which
        self.config = read_config(self.run)
        self.kind = str(self.config.get("kind", "registry"))
        if self.kind not in _KINDS:
            import fer_core.foreign.kinds  # noqa: F401 - registers the kinds of imported runs
            import fer_core.ensemble  # noqa: F401 - registers the ensemble kind
        if self.kind not in _KINDS:
            raise ModelUnavailable(f"{self.run}: unknown run kind {self.kind!r} (known: {', '.join(run_kinds())})")
        self.device = torch.device(device)
        src = _KINDS[self.kind](self.run, self.config, which, self.device)
        self.source = src
        self.model: nn.Module | None = src.module
        self.checkpoint = src.checkpoint
        self.epoch = src.epoch
        self.preprocess = Preprocess.from_dict(self.config.get("preprocess", {}))
        self.classes: tuple[str, ...] = tuple(self.config.get("classes") or EMOTIONS)
        self.key = (str(self.run.resolve()), which, _mtime_ns(self.checkpoint))
        self.lock = threading.RLock()
        self._default_detector = detector
        self._detectors: dict[str, Any] = {}
        self._infer: dict[str, nn.Module] = {}
        self._layers: dict[str, list[Any]] = {}
        self._onnx_clf: Any = None
        self._onnx_error: str | None = None
        self._int8_clf: Any = None
        self._int8_error: str | None = None

    def __repr__(self) -> str:
        return f"LoadedRun({str(self.run)!r}, kind={self.kind!r}, epoch={self.epoch})"

    # ---- the module ----------------------------------------------------------------------------
    @property
    def gradient_reason(self) -> str | None:
        """None when a differentiable torch module stands behind this run, else why not."""
        return None if self.model is not None else (self.source.reason or "this run has no torch module")

    def module(self) -> nn.Module:
        """The differentiable module, or :class:`ModelUnavailable` saying why there is none."""
        if self.model is None:
            raise ModelUnavailable(self.gradient_reason)
        return self.model

    def inputs(self, faces_u8: Any) -> torch.Tensor:
        """uint8 faces (N×H×W) -> the model input (the run's stored preprocessing)."""
        return self.preprocess(torch.as_tensor(np.asarray(faces_u8, dtype=np.uint8))).to(self.device)

    # ---- probabilities -------------------------------------------------------------------------
    def probs(self, faces_u8: Any, *, tta: str = "none", batch_size: int = 512) -> np.ndarray:
        """Class probabilities (N×C float32) of uint8 faces, with optional test-time augmentation."""
        from fer_core.evaluate import predict_probs

        x = torch.as_tensor(np.asarray(faces_u8, dtype=np.uint8))
        with self.lock:
            # an imported graph's own runtime when there is one (the file the user deploys)
            fn = self.source.forward if self.source.forward is not None else self.model
            if fn is None:
                raise ModelUnavailable(self.gradient_reason)
            return predict_probs(fn, x, self.preprocess, tta=tta, batch_size=batch_size, device=self.device)

    def _inference_model(self, precision: str) -> nn.Module:
        """A frozen copy made for batch-1 CPU inference (built once, under the lock).

        Why a copy: ``self.model`` stays the plain eval-mode module that attribution hooks into
        (Grad-CAM layers keep their names). The copy has BatchNorm folded into the preceding
        convolutions (``torch.fx`` fusion) and channels-last weights, which oneDNN runs faster at
        48×48 than NCHW; ``"bf16"`` also casts the weights to bfloat16 (CPUs with native bf16).
        """
        if self.kind != "registry":  # an imported graph runs as it is (copying or re-tracing it is not safe)
            return self.module()
        if precision not in self._infer:
            m = copy.deepcopy(self.module()).eval()
            if self.device.type == "cpu":
                try:
                    from torch.fx.experimental.optimization import fuse

                    m = fuse(m)
                except Exception:  # noqa: BLE001 - not fx-traceable: the unfused copy is still correct
                    pass
                m = m.to(memory_format=torch.channels_last)
            if precision == "bf16":
                m = m.to(torch.bfloat16)
            self._infer[precision] = m
        return self._infer[precision]

    def _onnx(self) -> Any:
        """The ONNX Runtime classifier, built once (None + a reason if it can't be)."""
        if self._onnx_clf is not None or self._onnx_error is not None:  # settled: no lock per frame
            return self._onnx_clf
        with self.lock:
            if self._onnx_clf is None and self._onnx_error is None:
                from fer_core.live.onnx_runtime import OnnxClassifier, OnnxUnavailable

                fwd = self.source.forward
                if self.device.type != "cpu":
                    self._onnx_error = "ONNX Runtime serves CPU models only here"
                elif (self.config.get("foreign") or {}).get("format") == "onnx" and fwd is not None:
                    # an imported ONNX graph: ONNX Runtime on the user's own file
                    self._onnx_clf = lambda x: torch.softmax(fwd(torch.as_tensor(x)).float(), 1).numpy()
                elif self.model is None:
                    self._onnx_error = self.gradient_reason
                else:
                    try:
                        self._onnx_clf = OnnxClassifier(self.model, self.preprocess.size)
                    except OnnxUnavailable as exc:
                        self._onnx_error = str(exc)
                    except Exception as exc:  # noqa: BLE001 - e.g. the runtime rejects the graph: use PyTorch
                        self._onnx_error = f"ONNX Runtime failed on this model ({type(exc).__name__}: {exc})"
            return self._onnx_clf

    def _int8(self) -> Any:
        """The run's stored int8 graph on ONNX Runtime, built once (None + a reason if there is none)."""
        if self._int8_clf is not None or self._int8_error is not None:
            return self._int8_clf
        with self.lock:
            if self._int8_clf is None and self._int8_error is None:
                from fer_core.live.onnx_runtime import OnnxUnavailable
                from fer_core.live.quantize import Int8Classifier

                if self.device.type != "cpu":
                    self._int8_error = "ONNX Runtime serves CPU models only here"
                else:
                    try:
                        self._int8_clf = Int8Classifier(self.run, self.classes)
                    except OnnxUnavailable as exc:
                        self._int8_error = str(exc)
            return self._int8_clf

    @property
    def int8_info(self) -> dict[str, Any] | None:
        """What ``quantize`` measured of the run's int8 graph (agreement with fp32 ...), or None."""
        clf = self._int8()
        return None if clf is None else dict(clf.info)

    def backend_status(self) -> dict[str, str | None]:
        """Each classification backend -> None when usable here, else why not."""
        from fer_core.device import cpu_bf16_supported

        self._onnx()
        self._int8()
        no_torch = None if self.model is not None else self.gradient_reason
        return {"torch": no_torch,
                "torch-bf16": no_torch or (NO_BF16.get(self.kind, "this run kind runs in fp32") if self.kind != "registry"
                                           else None if self.device.type == "cpu" and cpu_bf16_supported()
                                           else "this CPU has no native bfloat16 (AVX512-BF16/AMX): "
                                                "bf16 would be slower than fp32"),
                "onnx": self._onnx_error, "onnx-int8": self._int8_error}

    @functools.cached_property
    def live_backend(self) -> str:
        """The fastest usable backend for live frames: the run's own int8 graph when it has one
        (:mod:`fer_core.live.quantize`), else ONNX, else bf16 where native, else fp32."""
        status = self.backend_status()
        return next((b for b in LIVE_ORDER if status[b] is None), "torch")

    def classify(self, x: torch.Tensor, backend: str = "torch") -> np.ndarray:
        """Model input N×1×S×S -> probabilities N×C (eval / inference mode).

        ``"torch"`` is the reference (uploads, ``predict``); ``"onnx"`` is ONNX Runtime on the
        exported graph (as exact); ``"torch-bf16"`` is within ~1e-2; ``"onnx-int8"`` is the run's
        stored int8 graph (cheapest per face; its own accuracy, measured when it was made).
        """
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
        if len(x) == 0:
            return np.empty((0, len(self.classes)), np.float32)
        if backend == "onnx":
            clf = self._onnx()
            if clf is None:
                raise RuntimeError(f"the ONNX backend is not available: {self._onnx_error}")
            return clf(x)
        if backend == "onnx-int8":
            clf = self._int8()
            if clf is None:
                raise RuntimeError(f"the int8 backend is not available: {self._int8_error}")
            return clf(x)
        if self.model is None:
            if self.source.forward is None:
                raise ModelUnavailable(self.gradient_reason)
            with self.lock:
                return torch.softmax(self.source.forward(x).float(), dim=1).cpu().numpy()
        precision = "bf16" if backend == "torch-bf16" else "fp32"
        with self.lock, torch.inference_mode():
            m = self._inference_model(precision)
            xin = x.to(torch.bfloat16 if precision == "bf16" else torch.float32)
            if self.device.type == "cpu":
                xin = xin.contiguous(memory_format=torch.channels_last)
            logits = m(xin)
        return torch.softmax(logits.float(), dim=1).cpu().numpy()

    # ---- pictures: detect, crop, classify --------------------------------------------------------
    def get_detector(self, detector: Any = None) -> Any:
        """A detector by name (created once per object and shared: detectors are thread-safe)."""
        from fer_core.live.faces import create_detector

        detector = detector if detector is not None else self._default_detector
        if detector is not None and not isinstance(detector, str):
            return detector
        name = detector or ""
        with self.lock:
            if name not in self._detectors:
                self._detectors[name] = create_detector(detector)
            return self._detectors[name]

    @property
    def detector(self) -> Any:
        """The default face detector (``detector=`` at construction, else the registry default)."""
        return self.get_detector(None)

    def detect(self, image: np.ndarray, detector: Any = None) -> list:
        return self.get_detector(detector).detect(image)

    def model_inputs(self, crops: list[np.ndarray]) -> tuple[torch.Tensor, np.ndarray]:
        """Gray uint8 crops (any sizes) -> (model input N×1×S×S, the seen pixels N×S×S uint8).

        Each crop goes through the stored ``Preprocess`` on its own, so a crop is resized exactly
        as a training face of that size would be.
        """
        s = self.preprocess.size
        if not crops:
            return torch.empty(0, 1, s, s), np.empty((0, s, s), np.uint8)
        u = torch.cat([self.preprocess.to_unit(torch.from_numpy(np.ascontiguousarray(c))[None]) for c in crops])
        seen = (u[:, 0] * 255.0).round().clamp(0, 255).to(torch.uint8).numpy()
        return self.preprocess.standardize(u).to(self.device), seen

    def predict(self, image: Any, *, boxes: list | None = None, detector: Any = None,
                whole_image: bool = False) -> Any:
        """Detect (unless ``boxes`` are given), crop, preprocess and classify every face.

        With no face found, ``error`` is ``NO_FACE`` -- unless ``whole_image`` is set, then the
        whole picture is classified as one face. ``image``: RGB/gray uint8 array, bytes or a path.
        """
        from fer_core.live.faces import NO_FACE, Face, Prediction, crop_face, load_image, to_gray

        if not isinstance(image, np.ndarray):
            image = load_image(image)
        t0 = time.perf_counter()
        gray = to_gray(image)
        exact = False
        if boxes is None:
            det = self.get_detector(detector)
            boxes = det.detect(gray)
            exact = bool(getattr(det, "exact_crop", False))
        t1 = time.perf_counter()
        H, W = gray.shape
        use_whole = not boxes and whole_image
        crops = [crop_face(gray, (0, 0, W, H), exact=True)] if use_whole else \
            [crop_face(gray, b, exact=exact) for b in boxes]
        x, seen = self.model_inputs(crops)
        t2 = time.perf_counter()
        probs = self.classify(x, "torch")
        t3 = time.perf_counter()
        out_boxes: list = [None] if use_whole else list(boxes)
        faces = [Face(box=b, probs=probs[i], classes=self.classes, crop=seen[i], x=x[i:i + 1])
                 for i, b in enumerate(out_boxes)]
        return Prediction(faces=faces, image_size=(W, H), error=None if faces else NO_FACE,
                          whole_image=use_whole,
                          timings={"detect": 1e3 * (t1 - t0), "preprocess": 1e3 * (t2 - t1),
                                   "classify": 1e3 * (t3 - t2)})

    # ---- explanations (fer_core.explain), all under the lock ------------------------------------
    def _opts(self, method: str, opts: dict[str, Any]) -> dict[str, Any]:
        opts = dict(opts)
        opts.setdefault("preprocess", self.preprocess)
        return opts

    def attribute(self, x: torch.Tensor, target: Any = "pred", method: str = "gradcam", **opts: Any) -> np.ndarray:
        """Attribution maps (``N×S×S``) of model inputs ``x`` (``N×1×S×S``) for ``target``."""
        from fer_core.explain.attribution import explain

        if method in HOOKED_METHODS and self.layer_reason:
            raise ModelUnavailable(self.layer_reason)
        with self.lock:
            return explain(self.module(), x, target, method, **self._opts(method, opts))

    def attribute_faces(self, faces_u8: Any, targets: Sequence[int], method: str, **opts: Any) -> np.ndarray:
        """Maps of uint8 faces, one per target; ``len(targets)`` may be a multiple of the faces
        (the contrastive view repeats the faces, one block of targets per view)."""
        x = self.inputs(faces_u8)
        reps = len(targets) // max(len(x), 1)
        if reps > 1:
            x = x.repeat(reps, 1, 1, 1)
        return self.attribute(x, list(targets), method, **opts)

    def gradcam_layers(self) -> list[Any]:
        """Layers Grad-CAM can use (name, kind, channels, map size, coarse flag, note)."""
        from fer_core.explain.attribution import layer_table

        if self.layer_reason:
            return []
        with self.lock:  # one forward pass per object: the table only changes with the checkpoint
            if "gradcam" not in self._layers:
                self._layers["gradcam"] = layer_table(self.module(), input_size=int(self.preprocess.size))
            return list(self._layers["gradcam"])

    @property
    def layer_reason(self) -> str | None:
        """Why the module's layers cannot be hooked (Grad-CAM, filters), or None when they can."""
        return self.gradient_reason or getattr(self.model, "hook_reason", None)

    def default_gradcam_layer(self) -> str | None:
        layers = [li.name for li in self.gradcam_layers()]
        default = getattr(self.model, "gradcam_layer", None)
        return default if default in layers else (layers[-1] if layers else None)

    def method_notes(self, method: str, layer: str | None = None) -> list[str]:
        from fer_core.explain.attribution import method_notes

        with self.lock:
            return method_notes(self.module(), method, **({"layer": layer} if layer else {}))

    def parameter_layers(self) -> list[str]:
        from fer_core.explain.sanity import parameter_layers

        return parameter_layers(self.module())

    def sanity(self, faces_u8: Any, targets: Sequence[int], method: str, *, n_layers: int | None,
               seed: int = 0, **opts: Any) -> Any:
        """Model-randomisation check (Adebayo et al.): maps of a copy with the top layers
        re-initialised and their rank similarity to the original maps."""
        from fer_core.explain.sanity import sanity_check

        with self.lock:
            return sanity_check(self.module(), self.inputs(faces_u8), list(targets), method, n_layers=n_layers,
                                seed=seed, **self._opts(method, opts))

    def cascade(self, faces_u8: Any, targets: Sequence[int], method: str, *, seed: int = 0,
                **opts: Any) -> list[tuple[int, str, float]]:
        from fer_core.explain.sanity import cascading_randomization

        with self.lock:
            return cascading_randomization(self.module(), self.inputs(faces_u8), list(targets), method,
                                           seed=seed, **self._opts(method, opts))

    def cell_maps(self, faces_u8: Any, labels: Any, preds: Any, method: str, *, cells: Sequence[tuple[int, int]],
                  target: str, max_per_cell: int, **opts: Any) -> list[Any]:
        """Mean map + mean face per confusion cell (``faces_u8``, ``labels``, ``preds`` aligned)."""
        from fer_core.explain.attribution import cell_mean_maps

        faces = torch.as_tensor(np.asarray(faces_u8, dtype=np.uint8))
        with self.lock:
            return cell_mean_maps(self.module(), faces, self.preprocess, labels, preds, method,
                                  cells=list(cells), target=target, max_per_cell=max_per_cell, **opts)

    # ---- feature visualisation (fer_core.explain.featviz) ----------------------------------------
    def feature_layers(self) -> list[Any]:
        from fer_core.explain.featviz import feature_layer_table

        if self.layer_reason:
            return []
        with self.lock:
            if "feature" not in self._layers:
                self._layers["feature"] = feature_layer_table(self.module(), input_size=int(self.preprocess.size))
            return list(self._layers["feature"])

    def default_feature_layer(self) -> str | None:
        """The deepest conv layer whose maps are still spatial: the first conv reads pixels
        linearly (its ascent image is flat), the deepest ones show the most telling patterns."""
        layers = self.feature_layers()
        convs = [li for li in layers if li.kernel] or layers  # FeatureLayer.kernel is set for Conv2d only
        spatial = [li for li in convs if min(li.height, li.width) >= 3] or convs
        return spatial[-1].name if spatial else None

    def filter_images(self, layer: str, *, mode: str, filters: Sequence[int], steps: int, lr: float,
                      seed: int = 0) -> Any:
        from fer_core.explain.featviz import visualize_filters

        with self.lock:
            return visualize_filters(self.module(), layer, filters=list(filters), mode=mode, steps=steps, lr=lr,
                                     seed=seed, preprocess=self.preprocess, size=int(self.preprocess.size))

    def activations(self, layer: str, face_u8: Any) -> np.ndarray:
        """The layer's output maps (C×h×w) for one face."""
        from fer_core.explain.featviz import filter_activations

        with self.lock:
            return filter_activations(self.module(), layer, self.inputs(np.asarray(face_u8)[None])[0])

    def filter_weights(self, layer: str) -> np.ndarray | None:
        from fer_core.explain.featviz import filter_weights

        return filter_weights(self.module(), layer)

    def top_faces(self, layer: str, faces_u8: Any, *, filters: Sequence[int], k: int) -> Any:
        from fer_core.explain.featviz import top_activating

        with self.lock:
            return top_activating(self.module(), layer, torch.as_tensor(np.asarray(faces_u8, dtype=np.uint8)),
                                  self.preprocess, filters=list(filters), k=k)

    # ---- architecture ----------------------------------------------------------------------------
    def layer_rows(self) -> list[Any]:
        """The layer table (shapes, parameters, output-size formula checked) of the module."""
        from fer_core.models.summary import summarize

        with self.lock:
            return summarize(self.module(), input_size=int(self.preprocess.size))


def load_run(run: str | os.PathLike[str], which: str = "best", device: str = "cpu") -> LoadedRun:
    """``LoadedRun(run, which=which, device=device)``: the run's model ready for inference."""
    return LoadedRun(run, which=which, device=device)
