"""Live inference pieces, one job per module.

* :mod:`fer_core.live.faces` -- face detectors (a registry) and the crops the model sees;
* :mod:`fer_core.live.draw` -- boxes, labels and probability bars drawn on a frame;
* :mod:`fer_core.live.stream` -- per-video-stream tracking, smoothing and timings;
* :mod:`fer_core.live.onnx_runtime` -- ONNX export and the ONNX Runtime classifier.

Nothing is re-exported here: import from the module that does the job.
"""
