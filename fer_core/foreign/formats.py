"""What a model file is, from its content, and how each format becomes a torch module.

Why sniff the bytes: users name files freely (``model.pt`` may be TorchScript, a ``torch.export``
archive, a ``state_dict`` or a whole pickled model), and the safe way to load each differs. The
rules, in order:

* a zip archive with ``.data/serialization_id`` + ``code/`` is **TorchScript** (``torch.jit.save``):
  loaded by ``torch.jit.load``, which runs TorchScript (not Python) code;
* a zip archive in the PT2 layout (``archive_format`` + ``models/``) is a **torch.export** program
  (``torch.export.save``): ``torch.export.load`` + ``torch.export.unflatten`` so its submodules
  keep their names (Grad-CAM and filters hook them);
* a protobuf that ``onnx`` parses into a graph is **ONNX**;
* a ``.safetensors`` header, or a torch file that ``torch.load(weights_only=True)`` reads as a
  mapping of tensors, is a **state_dict** (needs the user's class: ``--code``, ``--trust-code``);
* any other torch pickle is a **pickled model**: refused unless ``--trust-code`` (unpickling runs
  arbitrary code).
"""

from __future__ import annotations

import importlib.util
import pickle
import sys
import zipfile
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

FORMATS = ("torchscript", "export", "onnx", "state_dict", "pickle")
TRUST_HINT = ("re-save it as TorchScript (`torch.jit.save(torch.jit.script(model), 'model.pt')`) or as a "
              "state_dict (`torch.save(model.state_dict(), 'weights.pt')` and import with "
              "`--code model.py:ClassName --trust-code`), or pass --trust-code if you trust the file")


class ForeignModelError(ValueError):
    """A model file that cannot be imported; the message says what it is and what to do."""


def _head(path: Path, n: int = 16) -> bytes:
    """The first bytes of a file (a model can be gigabytes: never read it whole to sniff it)."""
    with open(path, "rb") as f:
        return f.read(n)


def detect_format(path: Path) -> str:
    """One of :data:`FORMATS`, decided from the file's content; ForeignModelError otherwise."""
    if not path.is_file():
        raise ForeignModelError(f"{path}: no such file")
    head = _head(path)
    if not head:
        raise ForeignModelError(f"{path} is empty (0 bytes): not a model file")
    if zipfile.is_zipfile(path):
        try:
            names = zipfile.ZipFile(path).namelist()
        except zipfile.BadZipFile as exc:
            raise ForeignModelError(f"{path} is a corrupt zip archive ({exc})") from None
        if any(n.endswith("/archive_format") for n in names) and any("/models/" in n for n in names):
            return "export"
        if any(n.endswith("constants.pkl") or "/code/" in n for n in names):
            return "torchscript"
        if any(n.endswith("data.pkl") for n in names):
            return _torch_pickle_kind(path)
        raise ForeignModelError(f"{path} is a zip archive but neither TorchScript, torch.export nor a torch file")
    if path.suffix == ".safetensors" or head[8:9] == b"{":
        try:
            from safetensors.torch import load_file

            load_file(str(path))
            return "state_dict"
        except Exception:  # noqa: BLE001 - not safetensors after all: try the others
            pass
    try:
        import onnx

        model = onnx.load(str(path), load_external_data=False)
        if len(model.graph.node):
            return "onnx"
    except Exception:  # noqa: BLE001 - not a protobuf graph
        pass
    if head[:1] == b"\x80":  # a legacy (non-zip) torch pickle
        return _torch_pickle_kind(path)
    raise ForeignModelError(f"{path} is not a model file FER Studio can read (TorchScript, torch.export .pt2, "
                            "ONNX, state_dict .pt/.pth/.safetensors)")


def _torch_pickle_kind(path: Path) -> str:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        return "pickle"
    except Exception as exc:  # noqa: BLE001 - truncated or corrupt
        raise ForeignModelError(f"{path} is a corrupt torch file ({type(exc).__name__}: {exc})") from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]  # a checkpoint dict with the weights under "state_dict"
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return "state_dict"
    raise ForeignModelError(f"{path} is a torch file but holds no model or state_dict "
                            f"(it loads as a {type(obj).__name__})")


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors" or _is_safetensors(path):
        from safetensors.torch import load_file

        return load_file(str(path))
    obj = torch.load(path, map_location="cpu", weights_only=True)
    return obj["state_dict"] if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict) else obj


def _is_safetensors(path: Path) -> bool:
    return _head(path)[8:9] == b"{" and not zipfile.is_zipfile(path)


def load_user_class(code: str, base: Path | None = None) -> type:
    """``FILE.py:ClassName`` -> the class (executes FILE.py: callers check ``--trust-code`` first)."""
    if ":" not in code:
        raise ForeignModelError(f"--code expects FILE.py:ClassName, got {code!r}")
    file, cls = code.rsplit(":", 1)
    p = Path(file)
    if not p.is_absolute() and base is not None and (base / p).exists():
        p = base / p
    if not p.is_file():
        raise ForeignModelError(f"--code file {file} does not exist")
    name = f"fer_user_code_{abs(hash(str(p.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, p)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    except Exception as exc:  # noqa: BLE001 - the user's code failed: say where
        raise ForeignModelError(f"running {p} failed: {type(exc).__name__}: {exc}") from None
    if not hasattr(module, cls):
        raise ForeignModelError(f"{p} defines no {cls!r}")
    return getattr(module, cls)


def load_torch_module(path: Path, fmt: str, *, code: str | None = None, kwargs: dict[str, Any] | None = None,
                      trust_code: bool = False, code_base: Path | None = None) -> nn.Module:
    """The user's network as an eval-mode ``nn.Module`` (formats other than ONNX)."""
    if fmt == "torchscript":
        try:
            return torch.jit.load(str(path), map_location="cpu").eval()
        except Exception as exc:  # noqa: BLE001
            raise ForeignModelError(f"{path} could not be loaded as TorchScript: {exc}") from None
    if fmt == "export":
        try:
            ep = torch.export.load(str(path))
            return torch.export.unflatten(ep).eval()
        except Exception as exc:  # noqa: BLE001
            raise ForeignModelError(f"{path} could not be loaded as a torch.export program: {exc}") from None
    if fmt == "state_dict":
        if not code:
            raise ForeignModelError(f"{path} is a state_dict (weights only): name the network's class with "
                                    "--code FILE.py:ClassName [--kwargs JSON] --trust-code")
        if not trust_code:
            raise ForeignModelError(f"importing {path} would run your code {code} (to build the network); "
                                    "pass --trust-code to allow it")
        net = load_user_class(code, code_base)(**(kwargs or {}))
        try:
            net.load_state_dict(read_state_dict(path))
        except RuntimeError as exc:
            raise ForeignModelError(f"{path} does not match {code}: {str(exc).splitlines()[0]}") from None
        return net.eval()
    if fmt == "pickle":
        if not trust_code:
            raise ForeignModelError(f"{path} is a fully pickled model (torch.save(model)); loading it would run "
                                    f"arbitrary code, so it is refused. To import it, {TRUST_HINT}")
        obj = torch.load(path, map_location="cpu", weights_only=False)
        if not isinstance(obj, nn.Module):
            raise ForeignModelError(f"{path} unpickles to a {type(obj).__name__}, not a torch module")
        return obj.eval()
    raise ForeignModelError(f"no torch loader for format {fmt!r}")


def onnx_input_shape(path: Path) -> tuple[int | None, ...] | None:
    """The ONNX graph's first input shape (None for symbolic dims)."""
    import onnx

    g = onnx.load(str(path), load_external_data=False).graph
    inits = {i.name for i in g.initializer}
    for inp in g.input:
        if inp.name not in inits:
            return tuple((d.dim_value or None) for d in inp.type.tensor_type.shape.dim)
    return None


def export_input_shape(module: nn.Module, path: Path) -> tuple[int | None, ...] | None:
    """The example input shape a ``torch.export`` program was traced with (batch dim dropped to None)."""
    try:
        ep = torch.export.load(str(path))
        for node in ep.graph.nodes:
            if node.op == "placeholder" and node.name in ep.graph_signature.user_inputs:
                shape = node.meta["val"].shape
                return tuple(int(s) if isinstance(s, int) else None for s in shape)
    except Exception:  # noqa: BLE001 - best effort: the probe checks anyway
        return None
    return None


class OnnxForward:
    """ONNX Runtime on the user's graph: ``forward(x) -> output tensor`` (inference only)."""

    def __init__(self, path: Path, threads: int = 1) -> None:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001
            raise ForeignModelError(f"ONNX Runtime cannot open {path}: {exc}") from None
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = self.session.run(None, {self.input_name: x.detach().cpu().numpy().astype("float32")})[0]
        return torch.from_numpy(out)


def onnx_to_torch(path: Path) -> tuple[nn.Module | None, str | None]:
    """The graph as a torch module by onnx2torch (gradients), or None and why it cannot be converted."""
    try:
        import onnx
        import onnx2torch
    except ImportError as exc:
        return None, f"{exc.name} is not installed, so the ONNX graph has no differentiable torch form"
    from onnx import version_converter

    graph = onnx.load(str(path))
    try:
        return onnx2torch.convert(graph).eval(), None
    except Exception as exc:  # noqa: BLE001 - any op onnx2torch lacks: inference still works
        first = exc
    # onnx2torch knows most ops only up to older opsets: the same graph at a lower opset often converts
    for opset in (17, 15, 13):
        if graph.opset_import and graph.opset_import[0].version <= opset:
            continue
        try:
            return onnx2torch.convert(version_converter.convert_version(graph, opset)).eval(), None
        except Exception:  # noqa: BLE001
            continue
    if first is not None:
        exc = first
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return None, (f"onnx2torch cannot convert this ONNX graph to a torch module ({msg}), so gradient "
                      "methods (saliency, Grad-CAM, filter images) are unavailable; inference uses ONNX Runtime")
