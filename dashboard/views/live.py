"""Live page: classify faces in uploaded pictures, a webcam snapshot, or the live webcam stream.

Why three ways in: *Upload* works with any file and shows everything per face (the exact 48×48
crop the model sees, all seven probabilities, a saliency/Grad-CAM overlay, a second run side by
side); *Snapshot* (``st.camera_input``) is the webcam path that works in every browser and
network; *Live* (streamlit-webrtc) annotates the video stream frame by frame, but needs a WebRTC
connection between browser and server. All three go through the same
:class:`fer_core.model.LoadedRun` (one per checkpoint, shared by all sessions), so upload,
snapshot and live frames are cropped and preprocessed exactly like the training data.

Per-file handling is :func:`analyze_bytes` (no Streamlit; returns a :class:`FileResult`) plus
:func:`render_result`, so every kind of bad input can be tested by calling them with bytes. The
page body runs only as a Streamlit page (``__name__ == "__main__"``), so tests can import the
functions.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from dashboard import components, resources
from fer_core.checkpoint import CheckpointError
from fer_core.live.choice import stream_run, strongest_run
from fer_core.explain.colour import heat_overlay
from fer_core.live.draw import draw_faces
from fer_core.live.faces import DEFAULT_DETECTOR, ImageError, list_detectors, load_image
from fer_core.live.stream import LiveSettings
from fer_core.live.faces import Prediction
from fer_core.model import LIVE_ORDER, LoadedRun
from fer_core.runs import RunError, RunInfo

BACKEND_LABELS = {"onnx-int8": "ONNX Runtime (int8)", "onnx": "ONNX Runtime (fp32)", "torch-bf16": "PyTorch bf16",
                  "torch": "PyTorch fp32"}

MAX_UPLOAD_MB = 10          # also server.maxUploadSize in .streamlit/config.toml
ZOOM = 3                    # 48-px crops shown at 144 px, nearest-neighbour
ATTRIBUTIONS = {"gradcam": "Grad-CAM", "saliency": "Saliency", "none": "none"}
ICE_ENV = "FER_ICE_SERVERS"
ICE_HELP = (
    "No ICE servers are configured (this machine has no internet): the browser and this server "
    "must reach each other directly, e.g. the same computer or LAN. To connect across networks, "
    f"set the environment variable `{ICE_ENV}` to a JSON list of ICE servers before starting the "
    "dashboard, e.g. `" + ICE_ENV + "='[{\"urls\": [\"stun:stun.example.org:3478\"]}]'` (a STUN "
    "server; add a TURN server with `username`/`credential` for strict NATs). When the live "
    "stream cannot connect, use **Snapshot**, which works everywhere.")


# --------------------------------------------------------------------------- pure helpers
def ice_servers() -> list[dict[str, Any]]:
    """ICE servers from ``$FER_ICE_SERVERS`` (JSON list); none by default (no internet)."""
    raw = os.environ.get(ICE_ENV, "").strip()
    if not raw:
        return []
    try:
        val = json.loads(raw)
    except json.JSONDecodeError:
        return []
    return val if isinstance(val, list) else []


@dataclass
class FileResult:
    """One analysed file: an error message, or the image, face boxes and one Prediction per model."""

    name: str
    error: str | None = None
    image: np.ndarray | None = None
    predictions: list[Prediction] = field(default_factory=list)
    maps: list[list[np.ndarray | None]] = field(default_factory=list)   # [model][face] attribution

    @property
    def n_faces(self) -> int:
        return len(self.predictions[0].faces) if self.predictions else 0


def analyze_bytes(name: str, data: bytes, predictors: Sequence[LoadedRun], *, detector: str | None = None,
                  whole_image: bool = False, attribution: str = "gradcam") -> FileResult:
    """Load, detect once, classify the same faces with every predictor, attribute each face.

    Never raises: every failure becomes ``FileResult.error`` (a message for the user).
    """
    try:
        image = load_image(data, name=name)
    except ImageError as exc:
        return FileResult(name=name, error=str(exc))
    try:
        t0 = time.perf_counter()
        # numbered left to right, as a reader counts the faces (detectors return largest first)
        boxes = sorted(predictors[0].detect(image, detector), key=lambda b: (b[0] + b[2] / 2, b[1]))
        detect_ms = 1e3 * (time.perf_counter() - t0)
        preds = [p.predict(image, boxes=boxes, whole_image=whole_image) for p in predictors]
        for pr in preds:                 # boxes were found once, above: report that time
            pr.timings["detect"] = detect_ms
        maps: list[list[np.ndarray | None]] = []
        for p, pr in zip(predictors, preds):
            row: list[np.ndarray | None] = []
            for f in pr.faces:
                if attribution == "none":
                    row.append(None)
                    continue
                try:
                    row.append(p.attribute(f.x, f.top_index, attribution)[0])
                except Exception:  # noqa: BLE001 - a missing map must not hide the prediction
                    row.append(None)
            maps.append(row)
    except Exception as exc:  # noqa: BLE001 - the page keeps working whatever one file does
        return FileResult(name=name, error=f"{name}: could not be analysed ({type(exc).__name__}: {exc})")
    return FileResult(name=name, image=image, predictions=preds, maps=maps)


def annotated(result: FileResult, predictor: LoadedRun) -> np.ndarray:
    """The image with the first model's boxes and ``#i label p`` tags (no bars: shown below)."""
    img = np.ascontiguousarray(result.image).copy()
    pred = result.predictions[0]
    faces = [(f.box, f.probs, f"#{i + 1}") for i, f in enumerate(pred.faces) if f.box is not None]
    return draw_faces(img, faces, predictor.classes, bars=False)


def probs_frame(probs: np.ndarray, classes: Sequence[str]) -> pd.DataFrame:
    return pd.DataFrame({"emotion": list(classes), "probability": [float(p) for p in probs]})


def _zoom(img: np.ndarray, k: int = ZOOM) -> np.ndarray:
    return np.repeat(np.repeat(img, k, axis=0), k, axis=1)


# --------------------------------------------------------------------------- rendering
def render_result(result: FileResult, labels: Sequence[str], predictors: Sequence[LoadedRun], *,
                  key: str, attribution: str) -> None:
    """Everything the page shows for one file (or its error message)."""
    st.markdown(f"#### {result.name}")
    if result.error:
        st.error(result.error, icon="🚫")
        return
    pred0 = result.predictions[0]
    if pred0.error and not pred0.faces:
        st.warning(f"{result.name}: {pred0.error}. Tick **Classify the whole image when no face is "
                   "found** to treat the picture as one face (e.g. an already-cropped face).", icon="🙈")
    elif pred0.whole_image:
        st.info("No face found: the whole image was classified as one face.", icon="ℹ️")
    c_img, c_info = st.columns([3, 2])
    with c_img:
        st.image(annotated(result, predictors[0]), caption=f"{result.name} · {result.image.shape[1]}×"
                 f"{result.image.shape[0]} · {result.n_faces} face(s)", width="stretch" if
                 result.image.shape[1] > 480 else "content")
    with c_info:
        rows = []
        for i, f in enumerate(pred0.faces):
            rec = {"face": f"#{i + 1}", "box": "whole image" if f.box is None else
                   "x={} y={} w={} h={}".format(*f.box)}
            for lab, pr in zip(labels, result.predictions):
                g = pr.faces[i]
                rec[lab] = f"{g.top} {g.top_prob:.2f}"
            rows.append(rec)
        if rows:
            st.dataframe(pd.DataFrame(rows), hide_index=True, key=f"{key}_summary")
        ms = pred0.timings
        if ms:
            st.caption(f"detect {ms.get('detect', 0):.0f} ms · preprocess {ms.get('preprocess', 0):.1f} ms · "
                       f"classify {ms.get('classify', 0):.1f} ms")
    for i in range(result.n_faces):
        st.markdown(f"**Face #{i + 1}**")
        cols = st.columns(len(predictors))
        for m, (col, lab, p, pr) in enumerate(zip(cols, labels, predictors, result.predictions)):
            f = pr.faces[i]
            with col:
                st.caption(f"{lab} → **{f.top}** ({f.top_prob:.2f})")
                imgs = [_zoom(f.crop)]
                caps = [f"model input {f.crop.shape[1]}×{f.crop.shape[0]}"]
                amap = result.maps[m][i] if m < len(result.maps) and i < len(result.maps[m]) else None
                if amap is not None:
                    imgs.append(_zoom(heat_overlay(f.crop, amap)))
                    caps.append(f"{ATTRIBUTIONS.get(attribution, attribution)} for {f.top}")
                st.image(imgs, caption=caps, width=f.crop.shape[1] * ZOOM)
                st.dataframe(
                    probs_frame(f.probs, p.classes), hide_index=True, key=f"{key}_p{m}_f{i}",
                    column_config={"probability": st.column_config.ProgressColumn(
                        "probability", min_value=0.0, max_value=1.0, format="%.3f")})


# --------------------------------------------------------------------------- page sections
def _load(info: RunInfo) -> LoadedRun | None:
    """The run's shared loaded model, or None after saying on the page why it cannot load."""
    if info.error:
        components.run_problem(info)
        return None
    try:
        return resources.loaded_run(Path(info.path))
    except (RunError, CheckpointError, ValueError, OSError, RuntimeError) as exc:
        st.error(f"Cannot load **{info.label}**: {exc}", icon="🚫")
        return None


def _controls(runs: list[RunInfo]) -> tuple[list[str], list[LoadedRun], str, bool, str] | None:
    by = components.runs_by_path(runs)
    c1, c2, c3, c4 = st.columns([3, 3, 2, 2])
    with c1:
        run_a = components.pick_run(runs, key="live_run", label="Model", default=strongest_run(runs),
                                    help="For uploads and snapshots; starts on the strongest model (best "
                                         "validation accuracy). The Live tab picks its own model.")
    with c2:
        run_b = components.pick_run(runs, key="live_run_b", label="Compare with", none_label="— none —",
                                    exclude=run_a)
    with c3:
        dets = list_detectors()
        detector = st.selectbox("Face detector", list(dets), key="live_detector",
                                index=list(dets).index(DEFAULT_DETECTOR), help="\n".join(
                                    f"**{k}**: {v}" for k, v in dets.items()))
    with c4:
        attribution = st.selectbox("Overlay", list(ATTRIBUTIONS), format_func=ATTRIBUTIONS.get,
                                   key="live_attr", help="Attribution map over each face crop "
                                   "(for the predicted class)")
    whole = st.checkbox("Classify the whole image when no face is found", key="live_whole",
                        help="For pictures that already are a face crop (like FER2013's 48×48 faces).")
    if not run_a:
        return None
    chosen = [run_a] + ([run_b] if run_b else [])
    predictors = []
    for path in chosen:
        loaded = _load(by[path])
        if loaded is None:
            return None
        predictors.append(loaded)
    labels = [components.run_label(by[p]) for p in chosen]
    if any(by[p].synthetic for p in chosen):
        st.caption("A model trained on SynthFER (synthetic faces) has never seen a photograph: expect "
                   "poor results on real faces.")
    return labels, predictors, detector, whole, attribution


def upload_section(labels: list[str], predictors: list[LoadedRun], detector: str, whole: bool,
                   attribution: str) -> None:
    files = st.file_uploader(
        "Drop one or more images", accept_multiple_files=True, key="live_upload",
        max_upload_size=MAX_UPLOAD_MB,
        help=f"PNG, JPEG, WebP, BMP, GIF (first frame), TIFF; any colour mode; up to {MAX_UPLOAD_MB} MB "
             "per file. Faces are detected, cropped and classified.")
    st.caption(f"Up to {MAX_UPLOAD_MB} MB per file (larger files are refused by the uploader). "
               f"Images over {_max_pixels()} pixels are refused as possible decompression bombs.")
    for k, f in enumerate(files or []):
        res = analyze_bytes(f.name, f.getvalue(), predictors, detector=detector, whole_image=whole,
                            attribution=attribution)
        render_result(res, labels, predictors, key=f"live_up{k}", attribution=attribution)
        st.divider()
    if not files:
        st.caption("No picture uploaded yet. Meanwhile, an example: three **synthetic** SynthFER faces "
                   f"(true expressions: {', '.join(resources.example_labels())}), detected and classified "
                   "exactly as an upload would be.")
        res = analyze_bytes("example (SynthFER, synthetic)", resources.example_picture(), predictors,
                            detector=detector, whole_image=whole, attribution=attribution)
        render_result(res, labels, predictors, key="live_example", attribution=attribution)


def _max_pixels() -> str:
    from PIL import Image

    return f"{Image.MAX_IMAGE_PIXELS:,}" if Image.MAX_IMAGE_PIXELS else "unlimited"


def snapshot_section(labels: list[str], predictors: list[LoadedRun], detector: str, whole: bool,
                     attribution: str) -> None:
    st.caption("Take a photo with your webcam; it is analysed like an uploaded image. This works in "
               "every browser and network (no WebRTC connection needed).")
    shot = st.camera_input("Take a photo", key="live_camera")
    if shot is not None:
        res = analyze_bytes("snapshot", shot.getvalue(), predictors, detector=detector, whole_image=whole,
                            attribution=attribution)
        render_result(res, labels, predictors, key="live_snap", attribution=attribution)


def live_section(runs: list[RunInfo], detector: str) -> None:
    default, why = stream_run(runs)
    path = components.pick_run(runs, key="live_stream_run", label="Model for the stream", default=default,
                               help=why + " Every face of every frame is classified, so the per-face "
                                          "cost sets the frame rate.")
    st.caption(why)
    predictor = _load(components.runs_by_path(runs)[path]) if path else None
    if predictor is None:
        return
    try:
        import av
        from streamlit_webrtc import WebRtcMode, webrtc_streamer
    except ImportError:
        st.info("The live stream needs `streamlit-webrtc` (`pip install streamlit-webrtc==0.79.0`). "
                "Use **Snapshot** meanwhile.", icon="ℹ️")
        return
    from fer_core.live.stream import LiveProcessor

    c1, c2, c3, c4 = st.columns(4)
    with c1:
        smoothing = st.selectbox("Smoothing", ["ema", "window", "none"], key="live_smooth",
                                 format_func={"ema": "exponential (EMA)", "window": "moving window",
                                              "none": "none"}.get,
                                 help="Per tracked face, so labels do not flicker between frames.")
    with c2:
        if smoothing == "window":
            strength = float(st.slider("Window (frames)", 2, 30, 8, key="live_window"))
        else:
            strength = float(st.slider("EMA weight of the newest frame", 0.05, 1.0, 0.4, 0.05,
                                       key="live_alpha", disabled=smoothing == "none"))
    with c3:
        every = int(st.slider("Detect every k-th frame", 1, 10, 3, key="live_every",
                              help="Faces are tracked (IoU) in between; classification runs on every frame."))
    with c4:
        side = int(st.select_slider("Detection resolution (px)", [160, 240, 320, 480, 640], 320,
                                    key="live_side", help="Longer side of the downscaled frame the "
                                    "detector sees. Smaller is faster; faces must be ≥ 24 px there."))
    o1, o2, o3, o4 = st.columns(4)
    bars = o1.checkbox("Probability bars", True, key="live_bars")
    cam = o2.checkbox("Grad-CAM overlay (largest face)", False, key="live_gradcam")
    readout = o3.checkbox("Latency text on the video", True, key="live_readout")
    with st.spinner("Preparing the live classifier (ONNX export, once per checkpoint)…"):
        status = predictor.backend_status()
    usable = [b for b in LIVE_ORDER if status[b] is None]  # fastest first
    backend = o4.selectbox("Classifier", usable, index=usable.index(predictor.live_backend), key="live_backend",
                           format_func=BACKEND_LABELS.get,
                           help="ONNX Runtime computes the same fp32 probabilities as PyTorch in about a "
                                "third of the time per face; PyTorch bf16 is faster than PyTorch fp32 but "
                                "within ~0.01 of it. ONNX Runtime int8 is the run's own quantized graph "
                                "(`python -m fer_core quantize`): cheaper still, with its own accuracy. "
                                "Uploads and snapshots always use PyTorch fp32."
                                + "".join(f"\n\n{BACKEND_LABELS[b]}: unavailable ({why})."
                                          for b, why in status.items() if why))
    if backend == "onnx-int8" and (info := predictor.int8_info):
        o4.caption(f"int8 graph: top class as fp32 on {info['top1_agreement']:.1%} of "
                   f"{info['check_faces']:,} validation faces")
    settings = LiveSettings(detector=detector, detect_every=every, detect_side=side, smoothing=smoothing,
                            ema_alpha=strength if smoothing == "ema" else 0.4,
                            window=int(strength) if smoothing == "window" else 8,
                            bars=bars, gradcam=cam, readout=readout, backend=backend)
    proc: LiveProcessor | None = st.session_state.get("live_processor")
    if proc is None:
        proc = LiveProcessor(predictor, settings)
        st.session_state["live_processor"] = proc
    proc.predictor = predictor     # model or settings changed: the stream picks them up next frame
    proc.settings = settings

    def callback(frame: "av.VideoFrame") -> "av.VideoFrame":
        out = proc.process(frame.to_ndarray(format="rgb24"))
        return av.VideoFrame.from_ndarray(out, format="rgb24")

    try:
        ctx = webrtc_streamer(key="live_webrtc", mode=WebRtcMode.SENDRECV,
                              rtc_configuration={"iceServers": ice_servers()},
                              media_stream_constraints={"video": True, "audio": False},
                              video_frame_callback=callback, async_processing=True,
                              translations={"start": "Start camera", "stop": "Stop camera"})
    except Exception as exc:  # noqa: BLE001 - e.g. no Streamlit server session (AppTest, bare mode)
        st.info(f"The live stream is not available here ({type(exc).__name__}: {exc}). Use **Snapshot**.",
                icon="ℹ️")
        return
    st.caption(ICE_HELP)
    if ctx.state.playing:
        _live_readout(proc)


@st.fragment(run_every=1.0)
def _live_readout(proc: Any) -> None:
    s = proc.stats()
    cols = st.columns(6)
    cols[0].metric("FPS", f"{s['fps']:.1f}")
    cols[1].metric("detect", f"{s['detect_ms']:.1f} ms")
    cols[2].metric("preprocess", f"{s['preprocess_ms']:.1f} ms")
    cols[3].metric("classify", f"{s['classify_ms']:.1f} ms")
    cols[4].metric("draw", f"{s['draw_ms']:.1f} ms")
    cols[5].metric("faces", s["faces"])
    st.caption(f"live frames processed: {s['frames']} · " + (" · ".join(s["labels"]) or "no face in view"))


def main() -> None:
    st.title("Live")
    st.caption("Classify the faces in your own pictures or your webcam. Faces are found with "
               "OpenCV, cropped and preprocessed exactly like the model's training faces.")
    runs = resources.discover_runs()
    if not runs:
        components.no_runs_message()
        return
    picked = _controls(runs)
    if picked is None:
        return
    labels, predictors, detector, whole, attribution = picked
    t_up, t_snap, t_live = st.tabs(["Upload", "Snapshot", "Live"])
    with t_up:
        upload_section(labels, predictors, detector, whole, attribution)
    with t_snap:
        snapshot_section(labels, predictors, detector, whole, attribution)
    with t_live:
        live_section(runs, detector)


if __name__ == "__main__":
    main()
