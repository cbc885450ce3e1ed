"""Training: ``train_one_epoch``, ``evaluate_loss`` and ``fit`` (with resume).

Shaped after torchvision's ``references/classification`` (plain functions, resume restores
model + optimizer + schedule + epoch) and nanoGPT (one readable loop, the config saved with the
checkpoint so the run can be rebuilt from it alone). The recipe, ``TrainConfig``, lives in
:mod:`fer_core.train_config` and is re-exported here.

Why no DataLoader: FER faces are tiny (a whole FER2013 is ~80 MB as uint8), so the training set
lives in memory as one tensor and batches are index slices; augmentation runs batched on tensors
(:mod:`fer_core.augment`), so the input pipeline costs little next to model compute
(``bench/train_throughput.py`` measures the two).

Distillation (``teacher``, ``kd_t``, ``kd_alpha``; :mod:`fer_core.distill`, Hinton et al. 2015): ``loss =
alpha * T^2 * KL(p_teacher^T || p_student^T) + (1 - alpha) * CE(student, y, label_smoothing)``, ``p^T = softmax(logits / T)``.

Reproducibility: every epoch's shuffling, augmentation and dropout draw from RNGs seeded by
``(seed, epoch)``, so a resumed run continues exactly as an uninterrupted one would and the same
seed gives the same ``metrics.csv`` (apart from wall time) on the same machine and thread count.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as torch_dist
import torch.nn as nn
import torch.nn.functional as F

from fer_core.augment import build_augment
from fer_core.checkpoint import load_checkpoint, save_checkpoint
from fer_core.data.faceset import FaceSet
from fer_core.device import DistInfo, cpu_bf16_supported, resolve_device, setup_distributed, versions
from fer_core.distill import Teacher, cached_logits, kd_loss, load_teacher
from fer_core.models import create_model
from fer_core.preprocess import Preprocess
from fer_core.runs import (append_metrics, new_run_dir, read_config, split_seed_of, truncate_metrics,
                           write_config)
from fer_core.train_config import TrainConfig

Progress = Callable[[dict[str, Any]], None]


def use_bf16(cfg: TrainConfig, device: torch.device) -> bool:
    if cfg.bf16 == "off" or device.type != "cpu":
        return False
    supported = cpu_bf16_supported()
    if cfg.bf16 == "on" and not supported:
        raise RuntimeError("--bf16 on requested but this CPU lacks bf16 instructions; use --bf16 auto")
    return supported


# ----------------------------------------------------------------------------- loops

def _epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch * 7919) % (2**31 - 1)


def _lr_at(cfg: TrainConfig, step: int, total_steps: int, steps_per_epoch: int,
           time_fraction: float | None = None) -> float:
    """Per-step learning rate for the cosine/none schedules (linear warmup first).

    With a time budget the cosine runs over wall-clock time (``time_fraction`` in [0, 1]) so a run
    ends annealed whatever the machine's speed; otherwise over steps.
    """
    warm = int(cfg.warmup_epochs * steps_per_epoch)
    if warm and step < warm:
        return cfg.lr * (step + 1) / warm
    if cfg.schedule != "cosine":
        return cfg.lr
    t = time_fraction if time_fraction is not None else (step - warm) / max(1, total_steps - warm)
    return 0.5 * cfg.lr * (1.0 + math.cos(math.pi * min(1.0, t)))


def _to_unit(x_u8: torch.Tensor, preprocess: Preprocess, augment: nn.Module | None,
             device: torch.device) -> torch.Tensor:
    """uint8 faces -> (augmented) [0,1] pixels: what the student and a teacher both see."""
    x = preprocess.to_unit(x_u8.to(device))
    return augment(x) if augment is not None else x


def _standardized(u: torch.Tensor, preprocess: Preprocess, channels_last: bool) -> torch.Tensor:
    x = preprocess.standardize(u)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def train_one_epoch(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, cfg: TrainConfig,
                    preprocess: Preprocess, augment: nn.Module, optimizer: torch.optim.Optimizer,
                    epoch: int, device: torch.device, dist: DistInfo = DistInfo(), bf16: bool = False,
                    ema: torch.optim.swa_utils.AveragedModel | None = None,
                    progress: Progress | None = None, elapsed_before: float = 0.0,
                    teacher: Teacher | None = None,
                    teacher_table: torch.Tensor | None = None) -> tuple[float, float]:
    """One pass over the training faces; returns (mean loss, accuracy) of this process's shard.

    With ``cfg.time_budget_min`` the epoch also ends early once the budget is spent. With a
    ``teacher`` (:class:`fer_core.distill.Teacher`) the loss is :func:`fer_core.distill.kd_loss`,
    on the teacher's logits for the batch's augmented pixels, or, given ``teacher_table`` (one row
    per face of ``x``: :func:`fer_core.distill.cached_logits`), on its rows for the batch's faces.
    """
    budget_s = cfg.time_budget_min * 60.0
    t_start = time.perf_counter()
    model.train()
    seed = _epoch_seed(cfg.seed, epoch)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed + 1)  # dropout + the per-image augmentation parameters
    perm = torch.randperm(len(x), generator=gen)
    if dist.enabled:  # equal-length shards so every rank runs the same number of steps
        per = len(perm) // dist.world
        perm = perm[dist.rank::dist.world][:per]
    steps = math.ceil(len(perm) / cfg.batch_size)
    total_steps = steps * cfg.epochs
    loss_sum, correct, seen = 0.0, 0, 0
    mix_gen = np.random.default_rng(seed + 2)
    for i in range(steps):
        idx = perm[i * cfg.batch_size:(i + 1) * cfg.batch_size]
        ub = _to_unit(x[idx], preprocess, augment, device)
        xb = _standardized(ub, preprocess, cfg.channels_last)
        yb = y[idx].to(device)
        frac = None
        if budget_s > 0:
            frac = (elapsed_before + time.perf_counter() - t_start) / budget_s
            if dist.enabled:  # all ranks must agree on the schedule and on stopping
                f = torch.tensor([frac])
                torch_dist.all_reduce(f, op=torch_dist.ReduceOp.MAX)
                frac = float(f)
            if frac >= 1.0 and seen:
                break
        if cfg.schedule != "plateau":
            lr = _lr_at(cfg, (epoch - 1) * steps + i, total_steps, steps, frac)
            for g in optimizer.param_groups:
                g["lr"] = lr
        lam, perm_b = 1.0, None
        if cfg.mixup > 0:
            lam = float(mix_gen.beta(cfg.mixup, cfg.mixup))
            perm_b = torch.randperm(len(xb))
            xb = lam * xb + (1 - lam) * xb[perm_b]
            if teacher is not None:  # the teacher sees the same mixed pixels
                ub = lam * ub + (1 - lam) * ub[perm_b]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(xb)
        logits = logits.float()
        loss = F.cross_entropy(logits, yb, label_smoothing=cfg.label_smoothing)
        if perm_b is not None:
            loss = lam * loss + (1 - lam) * F.cross_entropy(logits, yb[perm_b],
                                                            label_smoothing=cfg.label_smoothing)
        if teacher is not None:
            soft = teacher_table[idx].to(device) if teacher_table is not None else teacher.logits(ub)
            loss = kd_loss(logits, soft, yb, T=cfg.kd_t, alpha=cfg.kd_alpha, hard=loss)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if ema is not None:
            ema.update_parameters(model)
        loss_sum += float(loss.detach()) * len(yb)
        correct += int((logits.argmax(1) == yb).sum())
        seen += len(yb)
        if progress is not None:
            progress({"kind": "batch", "epoch": epoch, "step": i + 1, "steps": steps,
                      "loss": loss_sum / seen, "acc": correct / seen})
    return loss_sum / max(1, seen), correct / max(1, seen)


@torch.inference_mode()
def evaluate_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, preprocess: Preprocess,
                  device: torch.device, batch_size: int = 512, channels_last: bool = False) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) in fp32 and eval mode, e.g. on the validation split."""
    was_training = model.training
    model.eval()
    loss_sum, correct = 0.0, 0
    try:
        for i in range(0, len(x), batch_size):
            xb = _standardized(_to_unit(x[i:i + batch_size], preprocess, None, device), preprocess, channels_last)
            yb = y[i:i + batch_size].to(device)
            logits = model(xb).float()
            loss_sum += float(F.cross_entropy(logits, yb, reduction="sum"))
            correct += int((logits.argmax(1) == yb).sum())
    finally:
        model.train(was_training)
    return loss_sum / max(1, len(x)), correct / max(1, len(x))


# ----------------------------------------------------------------------------- fit

def make_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """AdamW/Adam/SGD-Nesterov over two groups: weight decay on weights, none on BatchNorm and biases
    (standard practice; decaying them hurts)."""
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr)
    return torch.optim.AdamW(groups, lr=cfg.lr)


def build_run_config(cfg: TrainConfig, faces: FaceSet, preprocess: Preprocess) -> dict[str, Any]:
    return {
        "model": cfg.model,
        "model_kwargs": cfg.model_kwargs,
        "data": cfg.data,
        "synthetic": faces.synthetic,
        "preprocess": preprocess.to_dict(),
        "classes": list(faces.classes),
        "train": asdict(cfg),
        "seed": cfg.seed,
        "data_summary": {s: int((faces.split == s).sum()) for s in faces.splits},
        "versions": versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _open_run_dir(cfg: TrainConfig, run_dir: str | os.PathLike | None, runs_root: str | os.PathLike,
                  dist: DistInfo) -> tuple[Path, bool]:
    """The new run's directory (made by rank 0; every rank gets its name) and whether we made it."""
    created = False
    if dist.is_main:
        if run_dir is None:
            run_path = new_run_dir(runs_root, f"{cfg.model}-{time.strftime('%Y%m%d-%H%M%S')}")
            created = True
        else:
            run_path = Path(run_dir)
            created = not run_path.exists()
            run_path.mkdir(parents=True, exist_ok=True)
    else:
        run_path = Path(run_dir) if run_dir is not None else Path(os.devnull)
    if dist.enabled:
        obj = [str(run_path)]
        torch_dist.broadcast_object_list(obj, src=0)
        run_path = Path(obj[0])
    return run_path, created


def fit(cfg: TrainConfig | None = None, run_dir: str | os.PathLike | None = None, *,
        resume: str | os.PathLike | None = None, progress: Progress | None = None,
        faces: FaceSet | None = None, runs_root: str | os.PathLike = "runs",
        max_epochs: int | None = None, threads: int | None = None) -> Path:
    """Train (or resume) a run and return its directory.

    ``resume`` continues the run in that directory from ``last.pt`` (the config comes from its
    ``config.json``; ``max_epochs`` may extend it; ``threads`` fits it to the machine it resumes on,
    since the thread count is a property of the machine, not of the recipe). ``faces`` lets callers pass an already-loaded
    FaceSet (tests, dashboard); otherwise ``cfg.data`` is opened.
    """
    if resume is not None:
        run_path = Path(resume)
        run_cfg = read_config(run_path)
        cfg = TrainConfig.from_dict(run_cfg["train"])
        if max_epochs is not None:
            cfg.epochs = max_epochs
        if threads is not None:
            cfg.threads = threads
    elif cfg is None:
        raise ValueError("fit() needs a TrainConfig or resume=RUN_DIR")

    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    probe_device = resolve_device(cfg.device, int(os.environ.get("LOCAL_RANK", "0")))
    dist = setup_distributed(probe_device)
    device = probe_device
    bf16 = use_bf16(cfg, device)
    torch.manual_seed(cfg.seed)

    if faces is None:
        from fer_core.data import open_dataset

        faces = open_dataset(cfg.data, val_fraction=cfg.val_fraction, seed=split_seed_of(asdict(cfg)),
                             skip_bad_rows=cfg.skip_bad_rows, ferplus=cfg.ferplus)
    if cfg.relabel:  # after the split is made, so val stays the seeded slice of the original labels
        from fer_core.dataset.relabel import relabel_training
        faces, relabel = relabel_training(faces, cfg.relabel, run_cfg.get("relabel", {}) if resume else None)
        cfg = replace(cfg, relabel=relabel["file"])
    train, val = faces.select("train"), faces.select("val")
    if not train.labeled:
        raise ValueError(f"{cfg.data}: the train split has unlabeled faces; training needs labels")
    teacher = None
    if cfg.teacher:  # loaded once, before any run directory exists (a bad teacher leaves nothing)
        cfg = replace(cfg, teacher=str(Path(cfg.teacher).resolve()))
        teacher = load_teacher(cfg.teacher, device, faces.classes,
                               (run_cfg.get("teacher") or {}).get("config_hash") if resume is not None else None)

    if resume is not None:
        preprocess = Preprocess.from_dict(run_cfg["preprocess"])
        config = run_cfg
        config["train"] = asdict(cfg)
        config.pop("finished", None)
    else:
        preprocess = Preprocess.fit(train.x, normalize=cfg.normalize)
        config = build_run_config(cfg, faces, preprocess)
        if teacher is not None:
            config["teacher"] = teacher.identity
    if cfg.relabel:
        config["relabel"] = relabel  # file, sha256 and what it changed (resume re-checks the file)

    # Everything that bad input can break (model name and kwargs, augmentation, optimizer) is
    # built before a new run directory exists, so a typo leaves nothing behind.
    try:
        model = create_model(cfg.model, num_classes=len(faces.classes), **cfg.model_kwargs).to(device)
    except TypeError as exc:  # an unknown kwarg: a user error like an unknown name, not a crash
        raise ValueError(f"model {cfg.model!r} does not take these kwargs {cfg.model_kwargs}: {exc}") from exc
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(cfg, model)
    plateau = (torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.5, patience=3)
               if cfg.schedule == "plateau" else None)
    ema = None
    if cfg.ema > 0:
        ema = torch.optim.swa_utils.AveragedModel(
            model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(cfg.ema), use_buffers=True)
    augment = build_augment(cfg.aug).to(device)

    created = False
    if resume is None:
        run_path, created = _open_run_dir(cfg, run_dir, runs_root, dist)
    start_epoch, best_acc, best_epoch, elapsed = 1, -1.0, 0, 0.0
    last = run_path / "last.pt"
    try:
        if dist.is_main:
            write_config(run_path, config)
        if resume is not None and last.exists():
            ck = load_checkpoint(last)
            model.load_state_dict(ck.get("train_state_dict", ck["state_dict"]))
            optimizer.load_state_dict(ck["optimizer"])
            if plateau is not None and ck.get("plateau"):
                plateau.load_state_dict(ck["plateau"])
            if ema is not None and "state_dict" in ck:
                ema.module.load_state_dict(ck["state_dict"])
                ema.n_averaged.fill_(int(ck.get("ema_n", 1)))
            start_epoch = int(ck["epoch"]) + 1
            best_acc, best_epoch = float(ck.get("best_val_acc", -1.0)), int(ck.get("best_epoch", 0))
            elapsed = float(ck.get("elapsed_s", 0.0))
            if dist.is_main:
                truncate_metrics(run_path, int(ck["epoch"]))
        elif resume is not None and dist.is_main:
            truncate_metrics(run_path, 0)  # killed before the first epoch finished: start over
        teacher_table = None
        if teacher is not None and cfg.kd_cache:
            t_cache = time.perf_counter()
            teacher_table, computed = cached_logits(
                teacher, train.x, run_path, write=dist.is_main,
                preprocess_unit=lambda xb: preprocess.to_unit(xb.to(device)))
            if progress is not None:
                progress({"kind": "teacher_targets", "n": len(teacher_table), "computed": computed,
                          "seconds": time.perf_counter() - t_cache})
        net: nn.Module = model
        if dist.enabled:
            net = nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None)
    except BaseException:
        if created:  # a failure before training started: remove the directory this call made
            shutil.rmtree(run_path, ignore_errors=True)
        raise

    eval_model = ema.module if ema is not None else model
    stale = 0
    try:
        for epoch in range(start_epoch, cfg.epochs + 1):
            t0 = time.perf_counter()
            tr_loss, tr_acc = train_one_epoch(net, train.x, train.y, cfg=cfg, preprocess=preprocess,
                                              augment=augment, optimizer=optimizer, epoch=epoch,
                                              device=device, dist=dist, bf16=bf16, ema=ema,
                                              progress=progress, elapsed_before=elapsed, teacher=teacher,
                                              teacher_table=teacher_table)
            va_loss, va_acc = evaluate_loss(eval_model, val.x, val.y, preprocess=preprocess,
                                            device=device, channels_last=cfg.channels_last)
            if plateau is not None:
                plateau.step(va_acc)
            elapsed += time.perf_counter() - t0
            row = {"epoch": epoch, "time_s": elapsed, "lr": optimizer.param_groups[0]["lr"],
                   "train_loss": tr_loss, "train_acc": tr_acc, "val_loss": va_loss, "val_acc": va_acc}
            improved = va_acc > best_acc
            if improved:
                best_acc, best_epoch, stale = va_acc, epoch, 0
            else:
                stale += 1
            if dist.is_main:
                # Order matters for crash safety: metrics row, then best.pt, then last.pt. Resume
                # trusts last.pt's epoch and drops any later metrics rows.
                append_metrics(run_path, row)
                state = {k: v.detach().clone() for k, v in eval_model.state_dict().items()}
                common = {"config": config, "epoch": epoch, "best_val_acc": best_acc,
                          "best_epoch": best_epoch, "val_acc": va_acc, "elapsed_s": elapsed}
                if improved:
                    save_checkpoint(run_path / "best.pt", {"state_dict": state, **common})
                payload = {"state_dict": state, "optimizer": optimizer.state_dict(), **common}
                if ema is not None:
                    payload["train_state_dict"] = model.state_dict()
                    payload["ema_n"] = int(ema.n_averaged)
                if plateau is not None:
                    payload["plateau"] = plateau.state_dict()
                save_checkpoint(last, payload)
            if progress is not None:
                progress({"kind": "epoch", **row, "best_val_acc": best_acc})
            if cfg.time_budget_min > 0 and elapsed >= cfg.time_budget_min * 60.0:
                if progress is not None:
                    progress({"kind": "budget_spent", "epoch": epoch, "time_s": elapsed})
                break
            if cfg.early_stop and stale >= cfg.early_stop:
                if progress is not None:
                    progress({"kind": "early_stop", "epoch": epoch, "best_epoch": best_epoch})
                break
        if dist.is_main:
            config["finished"] = True
            config["best_epoch"], config["best_val_acc"] = best_epoch, best_acc
            write_config(run_path, config)
    finally:
        if dist.enabled and torch_dist.is_initialized():
            torch_dist.barrier()
            torch_dist.destroy_process_group()
    return run_path
