"""Live inference pieces, one job per module.

* :mod:`fer_core.live.faces` -- face detectors (a registry) and the crops the model sees;
* :mod:`fer_core.live.draw` -- boxes, labels and probability bars drawn on a frame;
* :mod:`fer_core.live.stream` -- per-video-stream tracking, smoothing and timings;
* :mod:`fer_core.live.onnx_runtime` -- ONNX export and the ONNX Runtime classifier;
* :mod:`fer_core.live.quantize` -- the run's int8 live graph (ONNX Runtime static quantization);
* :mod:`fer_core.live.choice` -- which runs the Live page starts with (strongest; fast on a bench record).

Nothing is re-exported here: import from the module that does the job.
"""
