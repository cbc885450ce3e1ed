"""Distillation: the KD loss on a hand-computed case, and training a SynthFER student with a teacher."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from fer_core.distill import Teacher, config_hash, kd_loss, soft_loss
from fer_core.runs import read_config, read_metrics, write_config
from fer_core.train import TrainConfig, fit

DATA = "synthetic:n=800,seed=0"


def test_kd_loss_on_a_hand_computed_two_class_case():
    # Face 1: teacher logits (2 ln 3, 0) at T=2 -> p_t = softmax(ln 3, 0) = (3/4, 1/4); student
    #   logits (0, 0) -> p_s = (1/2, 1/2). KL = 3/4 ln(3/2) + 1/4 ln(1/2) = 0.1308120; times
    #   T^2 = 4: 3 ln(3/2) - ln 2 = 0.5232481. CE(student, y=0) = ln 2 = 0.6931472.
    # Face 2: teacher = student = (0, 0): KL = 0; CE(student, y=1) = ln 2.
    # Batch means: soft = 0.5232481 / 2 = 0.2616241, CE = 0.6931472.
    # alpha = 0.5: loss = 0.5 * 0.2616241 + 0.5 * 0.6931472 = 0.4773856.
    student = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    teacher = torch.tensor([[2 * math.log(3.0), 0.0], [0.0, 0.0]])
    y = torch.tensor([0, 1])
    assert float(soft_loss(student[:1], teacher[:1], T=2.0)) == pytest.approx(0.5232481, abs=1e-6)
    assert float(soft_loss(student, teacher, T=2.0)) == pytest.approx(0.2616241, abs=1e-6)
    assert float(kd_loss(student, teacher, y, T=2.0, alpha=0.5)) == pytest.approx(0.4773856, abs=1e-6)
    # T = 1 on face 1: KL = 0.1308120 (no T^2 scaling), and alpha = 1 keeps the soft term only.
    t1 = torch.tensor([[math.log(3.0), 0.0]])
    assert float(kd_loss(student[:1], t1, y[:1], T=1.0, alpha=1.0)) == pytest.approx(0.1308120, abs=1e-6)


def test_alpha_zero_is_exactly_cross_entropy():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(16, 7, generator=g), torch.randn(16, 7, generator=g)
    y = torch.randint(0, 7, (16,), generator=g)
    for ls in (0.0, 0.1):
        assert torch.equal(kd_loss(s, t, y, T=4.0, alpha=0.0, label_smoothing=ls),
                           F.cross_entropy(s, y, label_smoothing=ls))


def test_probability_zero_from_a_teacher_stays_finite():
    s = torch.zeros(1, 3, requires_grad=True)
    loss = kd_loss(s, torch.nan_to_num(torch.tensor([[0.0, -math.inf, -1.0]]), neginf=-1e4), torch.tensor([0]))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(s.grad).all()


def _cfg(**kw) -> TrainConfig:
    base = dict(data=DATA, model="cnn3", model_kwargs={"channels": [8, 16, 32]}, epochs=1, batch_size=64,
                split_seed=0, threads=2, aug="basic")
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory) -> Path:
    return fit(_cfg(epochs=2, normalize=True, model_kwargs={"channels": [8, 16, 32]}),
               run_dir=tmp_path_factory.mktemp("t") / "teacher")


def _no_time(df: pd.DataFrame) -> pd.DataFrame:
    return df.drop(columns=["time_s"]).reset_index(drop=True)


def test_student_trains_with_a_teacher_on_the_same_augmented_pixels(teacher_run, tmp_path, monkeypatch):
    seen: dict[str, list[torch.Tensor]] = {"unit": [], "student": []}
    logits = Teacher.logits
    monkeypatch.setattr(Teacher, "logits", lambda self, u: seen["unit"].append(u.clone()) or logits(self, u))
    hook = torch.nn.modules.module.register_module_forward_pre_hook(
        lambda m, inp: seen["student"].append(inp[0].detach().clone())
        if m.__class__.__name__ == "SequentialNet" and m.training else None)
    try:
        run = fit(_cfg(teacher=str(teacher_run), kd_t=3.0, kd_alpha=0.6, normalize=True, mixup=0.2),
                  run_dir=tmp_path / "student")
    finally:
        hook.remove()
    cfg = read_config(run)
    assert cfg["teacher"]["run"] == "teacher" and cfg["teacher"]["config_hash"] == config_hash(read_config(teacher_run))
    assert cfg["train"]["teacher"] == str(teacher_run.resolve()) and cfg["train"]["kd_t"] == 3.0
    assert len(seen["unit"]) == len(seen["student"]) > 0
    mean, std = cfg["preprocess"]["mean"], cfg["preprocess"]["std"]
    for u, xb in zip(seen["unit"], seen["student"]):  # the student's input = standardised teacher pixels
        torch.testing.assert_close((u - mean) / std, xb.contiguous(), atol=1e-5, rtol=1e-5)
    plain = fit(_cfg(normalize=True, mixup=0.2), run_dir=tmp_path / "plain")
    assert not _no_time(read_metrics(run)).equals(_no_time(read_metrics(plain))), "the teacher changes the loss"


@pytest.mark.slow
def test_resume_with_a_teacher_is_exact_and_checks_the_teacher(teacher_run, tmp_path):
    full = fit(_cfg(epochs=2, teacher=str(teacher_run)), run_dir=tmp_path / "full")

    def stop_after_1(ev):
        if ev["kind"] == "epoch" and ev["epoch"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(_cfg(epochs=2, teacher=str(teacher_run)), run_dir=tmp_path / "cut", progress=stop_after_1)
    fit(resume=tmp_path / "cut")
    pd.testing.assert_frame_equal(_no_time(read_metrics(full)), _no_time(read_metrics(tmp_path / "cut")))

    cfg = read_config(teacher_run)
    write_config(teacher_run, {**cfg, "best_val_acc": 0.123})  # "another" teacher under the same path
    try:
        with pytest.raises(ValueError, match="changed since this run started"):
            fit(resume=tmp_path / "cut", max_epochs=3)
    finally:
        write_config(teacher_run, cfg)


def test_an_ensemble_teaches_and_a_bad_teacher_leaves_nothing(teacher_run, tmp_path):
    from fer_core.ensemble import create_ensemble

    other = fit(_cfg(seed=1), run_dir=tmp_path / "other")
    ens = create_ensemble([teacher_run, other], "ens", out=tmp_path, weights="equal")
    run = fit(_cfg(teacher=str(ens), kd_alpha=1.0), run_dir=tmp_path / "from-ens")
    assert read_config(run)["teacher"]["run"] == "ens" and len(read_metrics(run)) == 1

    bad = tmp_path / "bad-teacher"
    bad.mkdir()
    write_config(bad, {**read_config(teacher_run), "classes": [f"k{i}" for i in range(7)]})
    (bad / "best.pt").write_bytes((teacher_run / "best.pt").read_bytes())
    with pytest.raises(ValueError, match="not the data's"):
        fit(_cfg(teacher=str(bad)), run_dir=tmp_path / "never")
    assert not (tmp_path / "never").exists()
    with pytest.raises(ValueError, match="kd-alpha"):
        _cfg(teacher=str(teacher_run), kd_alpha=1.5)


def test_cached_targets_are_the_teachers_logits_of_each_clean_face(teacher_run, tmp_path, monkeypatch):
    """--kd-cache: the teacher runs once per training face (not per batch), every KD target is that
    face's row, and a resumed run reuses the stored table."""
    import fer_core.train as train_mod
    from fer_core.data import open_dataset
    from fer_core.distill import CACHE_FILE
    from fer_core.preprocess import Preprocess

    calls, targets, events = [], [], []
    logits = Teacher.logits
    monkeypatch.setattr(Teacher, "logits", lambda self, u: calls.append(len(u)) or logits(self, u))
    kd = train_mod.kd_loss
    monkeypatch.setattr(train_mod, "kd_loss", lambda s, t, y, **kw: targets.append(t.clone()) or kd(s, t, y, **kw))
    run = fit(_cfg(epochs=2, teacher=str(teacher_run), kd_cache=True, normalize=True), run_dir=tmp_path / "s",
              progress=events.append)
    cfg = read_config(run)
    train = open_dataset(DATA, val_fraction=0.1, seed=0).select("train")
    assert sum(calls) == len(train.x)                                 # one teacher pass, not one per epoch
    table = torch.load(run / CACHE_FILE, weights_only=True)["logits"]
    expected = Teacher(teacher_run).logits(Preprocess.from_dict(cfg["preprocess"]).to_unit(train.x))
    torch.testing.assert_close(table, expected)
    used = torch.cat(targets)
    assert len(used) == 2 * len(train.x)                              # every face, both epochs
    rows = {tuple(r.tolist()) for r in table}
    assert all(tuple(r.tolist()) in rows for r in used)               # each target is a face's row
    assert [e["computed"] for e in events if e["kind"] == "teacher_targets"] == [True]

    events.clear()
    calls.clear()
    fit(resume=run, max_epochs=3, progress=events.append)
    assert [e["computed"] for e in events if e["kind"] == "teacher_targets"] == [False] and not calls


def test_cached_targets_refuse_mixup_and_need_a_teacher(teacher_run):
    with pytest.raises(ValueError, match="mixup"):
        _cfg(teacher=str(teacher_run), kd_cache=True, mixup=0.2)
    with pytest.raises(ValueError, match="give --teacher"):
        _cfg(kd_cache=True)
