"""Models and logs made elsewhere, as first-class runs.

* :mod:`~fer_core.foreign.formats` -- what a model file is (decided from its bytes, not its name)
  and how each format is loaded: TorchScript, ``torch.export`` programs, ONNX (ONNX Runtime for
  inference, onnx2torch for gradients), ``state_dict`` + the user's class (``--trust-code`` only),
  a fully pickled model (refused unless ``--trust-code``).
* :mod:`~fer_core.foreign.adapter` -- :class:`ForeignModule`: our standardised 1-channel faces in,
  the user's input convention (channels, layout) and output convention (logits/probabilities,
  class order) hidden behind it, conv layers discovered by name.
* :mod:`~fer_core.foreign.probe` -- runs SynthFER faces through the model and says what it found.
* :mod:`~fer_core.foreign.importer` -- ``python -m fer_core import``: validates everything, then
  writes a run directory atomically; registers the ``foreign`` and ``predictions`` run kinds with
  :class:`fer_core.model.LoadedRun`.
* :mod:`~fer_core.foreign.history` -- Keras / Lightning / our CSV, Keras JSON and TensorBoard logs
  into ``metrics.csv``.
* :mod:`~fer_core.foreign.logger` -- :class:`RunLogger` for a user's own training loop.
"""
