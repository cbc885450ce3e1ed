"""Ensemble runs (``kind: "ensemble"``): several runs' averaged probabilities served as one model.

Why a run kind: every page and command already goes through :class:`fer_core.model.LoadedRun`,
so an ensemble that loads as one differentiable module is evaluated, exported (one ONNX graph),
explained, visualised and run live like any other run, with no page knowing it is an ensemble.

Why the module takes [0,1] pixels: members may have been trained with different mean/std, and
each must see its *own* standardisation. The ensemble's stored preprocessing is
``Preprocess(size=S)`` (no normalisation); each member re-standardises inside the module.

Why the log of the weighted mean: ``softmax(forward(x))`` is then exactly the weighted average of
the members' probabilities, computed stably (``logsumexp`` of log-probabilities plus log-weights)
and differentiable, so attributions explain the averaged output. Member layers keep their names
under ``members.<i>.`` (Grad-CAM and filter views per member; :attr:`EnsembleModule.member_names`
says whose layer it is).

Why weights on validation only: the test split stays an honest estimate. ``auto`` searches the
simplex in steps of 0.1 (up to 3 members; more members get equal weights) on the members' shared
validation slice, which is why members must share data, ``val_fraction`` and split seed.
"""

from __future__ import annotations

import itertools
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn as nn

from fer_core.model import LoadedRun, ModelSource, ModelUnavailable, register_kind
from fer_core.preprocess import Preprocess
from fer_core.runs import is_run_dir, write_config

GRID_STEP = 0.1
GRID_MAX_MEMBERS = 3


class EnsembleModule(nn.Module):
    """[0,1] pixels ``N×1×S×S`` -> ``log(sum_i w_i softmax(member_i((x - mean_i) / std_i)))``."""

    def __init__(self, members: Sequence[nn.Module], weights: Sequence[float],
                 preprocesses: Sequence[Preprocess], names: Sequence[str] = ()) -> None:
        super().__init__()
        w = [float(v) for v in weights]
        if not members or len(w) != len(members) or len(preprocesses) != len(members):
            raise ValueError("an ensemble needs one weight and one preprocessing per member")
        if min(w) <= 0:
            raise ValueError(f"ensemble weights must be positive (leave a member out instead): {w}")
        self.members = nn.ModuleList(members)
        # plain floats, not buffers: they become constants of traced / exported graphs
        self.log_weights = [float(np.log(v / sum(w))) for v in w]
        self.norms = [(p.mean, p.std) if p.normalize else None for p in preprocesses]
        self.member_names = list(names) or [f"member{i}" for i in range(len(members))]
        self.input_size = int(preprocesses[0].size)
        self.feature_layers = tuple(f"members.{i}.{n}" for i, m in enumerate(members)
                                    for n in getattr(m, "feature_layers", ()))
        heaviest = int(np.argmax(w))  # the default Grad-CAM layer belongs to the heaviest member
        cam = getattr(members[heaviest], "gradcam_layer", None)
        self.gradcam_layer = f"members.{heaviest}.{cam}" if cam else None
        reasons = [(n, getattr(m, "hook_reason", None)) for n, m in zip(self.member_names, members)]
        self.hook_reason = next((f"member {n}: {r}" for n, r in reasons if r), None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logs = []
        for member, norm, lw in zip(self.members, self.norms, self.log_weights):
            xi = x if norm is None else (x - norm[0]) / norm[1]
            logs.append(torch.log_softmax(member(xi).float(), dim=1) + lw)
        return torch.logsumexp(torch.stack(logs), dim=0)

    def member_of(self, layer: str) -> int | None:
        """Index of the member a layer name (``members.<i>.…``) belongs to, else None."""
        parts = layer.split(".")
        return int(parts[1]) if len(parts) > 2 and parts[0] == "members" and parts[1].isdigit() else None

    def layer_label(self, layer: str) -> str:
        """``"member fer2013-vgg (members.0.features.conv4)"`` for the pages' captions."""
        i = self.member_of(layer)
        return layer if i is None or i >= len(self.member_names) else f"member {self.member_names[i]} ({layer})"


def member_paths(run: Path, config: dict[str, Any]) -> list[Path]:
    """The member run directories (stored relative to the ensemble's directory, or absolute)."""
    members = (config.get("ensemble") or {}).get("members") or []
    return [Path(os.path.normpath(Path(run) / m)) for m in members]


def check_compatible(loaded: Sequence[LoadedRun]) -> None:
    """Raise ValueError unless the members share classes, input size and validation slice."""
    first = loaded[0]
    for lm in loaded[1:]:
        if tuple(lm.classes) != tuple(first.classes):
            raise ValueError(f"members {first.run.name} and {lm.run.name} have different classes "
                             f"({', '.join(first.classes)} vs {', '.join(lm.classes)})")
        if lm.preprocess.size != first.preprocess.size:
            raise ValueError(f"members {first.run.name} and {lm.run.name} take different input sizes "
                             f"({first.preprocess.size} vs {lm.preprocess.size} px)")
        if data_identity(lm.config) != data_identity(first.config):
            raise ValueError(f"members {first.run.name} and {lm.run.name} were trained on different data "
                             "or validation slices (data, val_fraction, split seed): their validation "
                             "faces would not be one held-out set")


def data_identity(config: dict[str, Any]) -> tuple[str, float, int]:
    """(portable data spec, val_fraction, split seed): which faces a run's splits are."""
    from fer_core.rundata import portable_spec
    from fer_core.runs import split_seed_of

    train, spec = config.get("train") or {}, str(config.get("data") or "")
    return (portable_spec(spec) if spec else "", float(train.get("val_fraction", 0.1)),
            split_seed_of(train, config.get("seed", 0)))


@register_kind("ensemble")
def load_ensemble(run: Path, config: dict[str, Any], which: str, device: torch.device) -> ModelSource:
    paths = member_paths(run, config)
    if not paths:
        raise ModelUnavailable(f"{run.name}: its config.json lists no ensemble members")
    loaded = []
    for p in paths:
        if not is_run_dir(p):
            raise ModelUnavailable(f"{run.name}: its member run {p} is missing")
        loaded.append(LoadedRun(p, which=which, device=str(device)))
    try:
        check_compatible(loaded)
    except ValueError as exc:
        raise ModelUnavailable(f"{run.name}: {exc}") from None
    modules = []
    for lm in loaded:
        if lm.model is None:
            raise ModelUnavailable(f"{run.name}: member {lm.run.name} has no torch module ({lm.gradient_reason})")
        modules.append(lm.model)
    weights = (config.get("ensemble") or {}).get("weights") or [1.0] * len(loaded)
    names = [p.name for p in paths]
    module = EnsembleModule(modules, weights, [lm.preprocess for lm in loaded], names).to(device).eval()
    total = sum(float(w) for w in weights)
    parts = ", ".join(f"{n} (w {float(w) / total:.2f})" for n, w in zip(names, weights))
    return ModelSource(module=module, checkpoint=Path(run) / "config.json", epoch=0,
                       describe=f"ensemble of {len(names)} runs: {parts}")


# ----------------------------------------------------------------------------- weights

def simplex_grid(m: int, step: float = GRID_STEP) -> np.ndarray:
    """Every weight vector of ``m`` entries, multiples of ``step``, summing to 1 (G×m)."""
    k = int(round(1 / step))
    rows = [(*c, k - sum(c)) for c in itertools.product(range(k + 1), repeat=m - 1) if sum(c) <= k]
    return np.asarray(rows, dtype=np.float64) / k


def choose_weights(member_probs: Sequence[np.ndarray], labels: np.ndarray,
                   step: float = GRID_STEP) -> tuple[list[float], float]:
    """Weights maximising accuracy on the given (validation) faces, ties to the lower NLL.

    Up to :data:`GRID_MAX_MEMBERS` members the simplex is searched in steps of ``step``; more
    members get equal weights (the grid grows as ``(1/step)^(m-1)``). Returns (weights, accuracy).
    """
    probs = np.stack([np.asarray(p, np.float64) for p in member_probs])  # M×N×C
    m = len(probs)
    grid = simplex_grid(m, step) if m <= GRID_MAX_MEMBERS else np.full((1, m), 1.0 / m)
    mix = np.einsum("gm,mnc->gnc", grid, probs)
    acc = (mix.argmax(2) == labels[None]).mean(1)
    nll = -np.log(mix[:, np.arange(len(labels)), labels] + 1e-12).mean(1)
    best = int(np.lexsort((nll, -acc))[0])
    return [round(float(v), 6) for v in grid[best]], float(acc[best])


def parse_weights(spec: str | Sequence[float], n: int) -> list[float] | None:
    """``"auto"`` -> None (choose on validation), ``"equal"``, or ``"w1,w2,…"`` (normalised)."""
    if isinstance(spec, str) and spec in ("auto", "equal"):
        return None if spec == "auto" else [round(1.0 / n, 6)] * n
    try:
        w = [float(v) for v in (spec.split(",") if isinstance(spec, str) else spec)]
    except ValueError:
        raise ValueError(f"--weights must be auto, equal or {n} comma-separated numbers, not {spec!r}") from None
    if len(w) != n or min(w) < 0 or sum(w) <= 0:
        raise ValueError(f"--weights needs {n} non-negative numbers with a positive sum, got {spec!r}")
    return [round(v / sum(w), 6) for v in w]


# ----------------------------------------------------------------------------- creation

def _stored_path(member: Path, run: Path) -> str:
    """Sibling runs are stored as ``../name`` (a shipped folder moves as a whole), others absolute."""
    member, run = member.resolve(), run.resolve()
    return f"../{member.name}" if member.parent == run.parent else str(member)


def create_ensemble(members: Sequence[str | os.PathLike], name: str, *, out: str | os.PathLike = "runs",
                    weights: str | Sequence[float] = "auto",
                    log: Callable[[str], None] | None = None) -> Path:
    """Make the ensemble run ``out/name`` of ``members`` and evaluate it; returns its directory.

    Everything is checked before the directory exists (members load, share classes, input size
    and validation slice; the weights parse; the data opens), and a failure afterwards removes
    it. ``weights="auto"`` chooses them on the validation split (:func:`choose_weights`); members
    given weight 0 are left out. Then ``choose_tta`` picks the test-time augmentation on
    validation, and val/test are evaluated into ``eval/``.
    """
    from fer_core.data.spec import open_dataset
    from fer_core.device import versions
    from fer_core.evaluate import choose_tta, evaluate_run
    from fer_core.rundata import DataUnavailable, resolve_data

    say = log or (lambda _msg: None)
    run = Path(out) / name
    if run.exists():
        raise ValueError(f"{run} already exists; choose another --name")
    paths = [Path(m) for m in members]
    if len(paths) < 2:
        raise ValueError("an ensemble needs at least two member runs")
    if len({p.resolve() for p in paths}) != len(paths):
        raise ValueError("a member run is listed twice")
    for p in paths:
        if not is_run_dir(p):
            raise ValueError(f"member {p} is not a run directory (no config.json)")
    loaded = [LoadedRun(p) for p in paths]
    for lm in loaded:
        lm.module()  # a member without a torch module cannot be part of one graph
    check_compatible(loaded)
    w = parse_weights(weights, len(loaded))

    first = loaded[0].config
    train0 = first.get("train") or {}
    spec, vf, split_seed = first.get("data"), *data_identity(first)[1:]
    config: dict[str, Any] = {
        "kind": "ensemble", "model": "ensemble", "classes": list(loaded[0].classes),
        "preprocess": Preprocess(size=loaded[0].preprocess.size).to_dict(),
        "data": spec, "synthetic": bool(first.get("synthetic", str(spec).startswith("synthetic"))),
        "train": {"data": spec, "val_fraction": vf, "seed": split_seed, "split_seed": split_seed,
                  "ferplus": train0.get("ferplus")},
        "seed": split_seed, "versions": versions(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "finished": True}
    for key in ("data_ref", "data_summary"):
        if key in first:
            config[key] = first[key]
    choice = resolve_data(config)
    if choice.spec is None:
        raise DataUnavailable(choice.note or "the members' data is not on this machine")
    faces = open_dataset(choice.spec, val_fraction=choice.val_fraction, seed=choice.seed)
    val = faces.select("val")
    labels = val.y.numpy()
    if len(labels) == 0 or (labels < 0).any():
        raise ValueError("the members' data has no labelled validation split to choose or report on")
    probs = [lm.probs(val.x) for lm in loaded]
    for lm, p in zip(loaded, probs):
        say(f"val: member {lm.run.name} accuracy {float((p.argmax(1) == labels).mean()):.4f}")
    how = "given"
    if w is None:
        w, _ = choose_weights(probs, labels)
        how = f"auto: validation accuracy over the simplex in steps of {GRID_STEP}" if len(w) <= GRID_MAX_MEMBERS \
            else f"auto: equal (more than {GRID_MAX_MEMBERS} members)"
    elif weights == "equal":
        how = "equal"
    keep = [i for i, v in enumerate(w) if v > 0]
    for i in sorted(set(range(len(w))) - set(keep)):
        say(f"member {loaded[i].run.name} has weight 0 and is left out")
    total = sum(w[i] for i in keep)
    config["ensemble"] = {"members": [_stored_path(paths[i], run) for i in keep],
                          "weights": [round(w[i] / total, 6) for i in keep], "weights_chosen": how,
                          "member_val_acc": {loaded[i].run.name: round(float((probs[i].argmax(1) == labels).mean()), 6)
                                             for i in keep}}
    run.mkdir(parents=True)
    try:
        write_config(run, config)
        lm = LoadedRun(run)
        acc = evaluate_run(run, split="val", faces=faces, model=lm)["accuracy"]
        say(f"val: ensemble ({', '.join(f'{v:.2f}' for v in config['ensemble']['weights'])}) accuracy {acc:.4f}")
        config["best_val_acc"] = acc
        write_config(run, config)
        tta = choose_tta(run, faces=faces)
        say(f"test-time augmentation chosen on validation: {tta}")
        for mode in ["none"] + ([tta] if tta != "none" else []):
            try:
                r = evaluate_run(run, split="test", tta=mode, faces=faces, model=lm)
                say(f"test: accuracy {r['accuracy']:.4f} macro_f1 {r['macro_f1']:.4f} (n={r['n']}, tta={mode})")
            except ValueError as exc:  # e.g. a source with no test split
                say(f"test: not evaluated ({exc})")
    except BaseException:
        shutil.rmtree(run, ignore_errors=True)
        raise
    return run
