"""fer_core.foreign.history: other tools' training logs -> our per-epoch curves, and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fer_core.__main__ import main
from fer_core.foreign.history import canonical_column, read_history, write_history
from fer_core.runs import METRIC_COLUMNS, read_config, read_metrics, write_config

E = 6
RNG = np.random.default_rng(0)
CURVES = {
    "train_loss": np.linspace(1.9, 0.6, E) + RNG.uniform(0, 0.01, E),
    "train_acc": np.linspace(0.2, 0.8, E) + RNG.uniform(0, 0.01, E),
    "val_loss": np.linspace(1.8, 0.9, E) + RNG.uniform(0, 0.01, E),
    "val_acc": np.linspace(0.25, 0.7, E) + RNG.uniform(0, 0.01, E),
    "lr": 1e-3 * 0.5 ** np.arange(E),
}
TOP3 = np.linspace(0.5, 0.95, E)


def assert_curves(h, cols=("train_loss", "train_acc", "val_loss", "val_acc")):
    assert list(h.frame.columns[:len(METRIC_COLUMNS)]) == list(METRIC_COLUMNS)
    assert h.frame["epoch"].tolist() == list(range(1, E + 1))
    for c in cols:
        np.testing.assert_allclose(h.frame[c].to_numpy(), CURVES[c], atol=1e-6, err_msg=c)


def keras_csv(path: Path, percent: bool = False) -> Path:
    k = 100.0 if percent else 1.0
    pd.DataFrame({"epoch": np.arange(E), "accuracy": CURVES["train_acc"] * k, "loss": CURVES["train_loss"],
                  "lr": CURVES["lr"], "top3_acc": TOP3, "val_accuracy": CURVES["val_acc"] * k,
                  "val_loss": CURVES["val_loss"]}).to_csv(path, index=False)
    return path


def lightning_csv(path: Path) -> Path:
    """Lightning CSVLogger layout: one row per log call, NaN elsewhere, epoch 0-based; the
    LearningRateMonitor rows carry no epoch; train_loss_step is per batch."""
    rows, step = [], 0
    for e in range(E):
        rows.append({"step": step, "lr-Adam": CURVES["lr"][e]})
        for b in range(3):
            rows.append({"epoch": e, "step": step, "train_loss_step": 5.0 + b})
            step += 1
        rows.append({"epoch": e, "step": step - 1, "val_loss": CURVES["val_loss"][e], "val_acc": CURVES["val_acc"][e],
                     "val_top3": TOP3[e]})
        rows.append({"epoch": e, "step": step - 1, "train_loss_epoch": CURVES["train_loss"][e],
                     "train_acc_epoch": CURVES["train_acc"][e]})
    cols = ["epoch", "lr-Adam", "step", "train_acc_epoch", "train_loss_epoch", "train_loss_step", "val_acc",
            "val_loss", "val_top3"]
    pd.DataFrame(rows)[cols].to_csv(path, index=False)
    return path


def test_name_table():
    assert canonical_column("val_accuracy")[0] == "val_acc"
    assert canonical_column("Accuracy/val")[0] == "val_acc"
    assert canonical_column("validation/epoch_accuracy")[0] == "val_acc"
    assert canonical_column("Loss/train")[0] == "train_loss"
    assert canonical_column("epoch_loss")[0] == "train_loss"
    assert canonical_column("learning_rate")[0] == "lr"
    assert canonical_column("lr-Adam")[0] == "lr"
    for other in ("top3_acc", "test_loss", "val_top3", "grad_norm", "epoch", "step"):
        assert canonical_column(other) is None, other
    # our own name first, then an epoch-level value, a plain one, a step-level one
    ranks = [canonical_column(n)[1] for n in ("train_loss", "train_loss_epoch", "loss", "train_loss_step")]
    assert ranks == sorted(ranks) and len(set(ranks)) == 4


def test_keras_csv(tmp_path):
    h = read_history(keras_csv(tmp_path / "training.log"))
    assert h.kind == "keras-csv"
    assert_curves(h)
    np.testing.assert_allclose(h.frame["lr"], CURVES["lr"], rtol=1e-9)
    assert h.extra == ["top3_acc"]
    np.testing.assert_allclose(h.frame["top3_acc"], TOP3)
    assert h.frame["time_s"].isna().all()
    assert h.describe().startswith(f"read {E} epochs from a Keras CSVLogger file")
    assert h.describe().endswith("kept extra columns: top3_acc")
    assert not h.notes


def test_keras_csv_percent_accuracy_is_scaled_and_said(tmp_path):
    h = read_history(keras_csv(tmp_path / "log.csv", percent=True))
    assert_curves(h)
    assert any("percent" in n and "val_accuracy" in n for n in h.notes)
    assert any("percent" in n and n.startswith("accuracy") for n in h.notes)


def test_lightning_csv_aggregates_step_rows(tmp_path):
    h = read_history(lightning_csv(tmp_path / "metrics.csv"))
    assert h.kind == "lightning-csv"
    assert_curves(h)
    np.testing.assert_allclose(h.frame["lr"], CURVES["lr"])  # epoch-less LR rows belong to the next epoch
    assert h.mapping["train_loss"] == "train_loss_epoch"      # not the per-step value
    assert set(h.extra) == {"step", "train_loss_step", "val_top3"}
    assert h.frame["train_loss_step"].tolist() == [7.0] * E  # the last non-NaN value of the epoch
    np.testing.assert_allclose(h.frame["val_top3"], TOP3)


def test_lightning_folder_is_read_through_its_metrics_csv(tmp_path):
    d = tmp_path / "lightning_logs" / "version_0"
    d.mkdir(parents=True)
    lightning_csv(d / "metrics.csv")
    assert_curves(read_history(d))


def test_tensorboard_summarywriter(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    w = SummaryWriter(str(tmp_path / "tb"))
    for e in range(E):
        w.add_scalar("Loss/train", CURVES["train_loss"][e], e)
        w.add_scalar("Accuracy/train", CURVES["train_acc"][e], e)
        w.add_scalar("Loss/val", CURVES["val_loss"][e], e)
        w.add_scalar("Accuracy/val", CURVES["val_acc"][e], e)
        w.add_scalar("grad_norm", float(e), e)
    w.close()
    for path in (tmp_path / "tb", next((tmp_path / "tb").glob("*tfevents*"))):  # the folder or the file
        h = read_history(path)
        assert h.kind == "tensorboard"
        assert_curves(h)
        assert h.extra == ["grad_norm"]
        assert h.frame["grad_norm"].tolist() == list(map(float, range(E)))
        assert (h.frame["time_s"].diff().dropna() >= 0).all() and h.frame["time_s"].notna().all()


def test_tensorboard_keras_layout(tmp_path):
    """Keras' TensorBoard callback: train/ and validation/ runs, the same epoch_* tags, TF2
    tensor summaries (written here by TensorBoard's own TF-free writer)."""
    import tensorboard.summary as tbs

    for run, pre in (("train", "train"), ("validation", "val")):
        w = tbs.Writer(str(tmp_path / "logs" / run))
        for e in range(E):
            w.add_scalar("epoch_loss", CURVES[f"{pre}_loss"][e], e)
            w.add_scalar("epoch_accuracy", CURVES[f"{pre}_acc"][e], e)
            if run == "train":
                w.add_scalar("epoch_learning_rate", CURVES["lr"][e], e)
        w.close()
    h = read_history(tmp_path / "logs")
    assert_curves(h)
    np.testing.assert_allclose(h.frame["lr"], CURVES["lr"], rtol=1e-6)
    assert h.extra == []


def test_tensorboard_epoch_tag_groups_steps(tmp_path):
    """Lightning's TensorBoardLogger: global steps, plus an ``epoch`` tag naming their epoch."""
    from torch.utils.tensorboard import SummaryWriter

    w = SummaryWriter(str(tmp_path / "tb"))
    step = 0
    for e in range(E):
        for _ in range(4):
            w.add_scalar("train_loss_step", 9.0, step)
            w.add_scalar("epoch", e, step)
            step += 1
        w.add_scalar("val_loss", CURVES["val_loss"][e], step - 1)
        w.add_scalar("val_acc", CURVES["val_acc"][e], step - 1)
        w.add_scalar("train_loss_epoch", CURVES["train_loss"][e], step - 1)
        w.add_scalar("train_acc_epoch", CURVES["train_acc"][e], step - 1)
        w.add_scalar("epoch", e, step - 1)
    w.close()
    h = read_history(tmp_path / "tb")
    assert_curves(h)
    assert h.extra == ["train_loss_step"]


def test_same_curves_from_every_format(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    w = SummaryWriter(str(tmp_path / "tb"))
    for e in range(E):
        w.add_scalar("train/loss", CURVES["train_loss"][e], e + 1)  # 1-based steps stay as they are
        w.add_scalar("val/acc", CURVES["val_acc"][e], e + 1)
    w.close()
    hs = [read_history(keras_csv(tmp_path / "k.csv")), read_history(lightning_csv(tmp_path / "l.csv")),
          read_history(tmp_path / "tb")]
    for h in hs[1:]:
        for c in ("train_loss", "val_acc"):
            np.testing.assert_allclose(h.frame[c], hs[0].frame[c], atol=1e-6)
        assert h.frame["epoch"].tolist() == hs[0].frame["epoch"].tolist()


def test_keras_json(tmp_path):
    p = tmp_path / "history.json"
    p.write_text(json.dumps({"loss": CURVES["train_loss"].tolist(), "accuracy": CURVES["train_acc"].tolist(),
                             "val_loss": CURVES["val_loss"].tolist(), "val_accuracy": CURVES["val_acc"].tolist(),
                             "val_top3_acc": TOP3.tolist()}))
    h = read_history(p)
    assert h.kind == "keras-json"
    assert_curves(h)
    assert h.extra == ["val_top3_acc"]


def test_own_metrics_csv_passes_through_and_write_round_trips(tmp_path):
    h = read_history(keras_csv(tmp_path / "k.csv"))
    run = tmp_path / "run"
    run.mkdir()
    write_history(run, h)
    back = read_history(run / "metrics.csv")
    assert back.kind == "fer-studio" and back.extra == ["top3_acc"] and back.mapping["val_acc"] == "val_acc"
    pd.testing.assert_frame_equal(back.frame, h.frame, atol=1e-6, check_dtype=False)
    df = read_metrics(run)  # the run reader accepts NaN cells and extra columns
    assert df["epoch"].tolist() == list(range(1, E + 1)) and df["time_s"].isna().all()
    np.testing.assert_allclose(df["top3_acc"], TOP3, atol=1e-6)


@pytest.mark.parametrize("name,content,problem", [
    ("empty.csv", b"", "empty"),
    ("blank.csv", b"\n\n", "empty"),
    ("header.csv", b"epoch,loss,val_loss\n", "no rows"),
    ("faces.csv", b"emotion,pixels,Usage\n0,1 2 3,Training\n", "no loss or accuracy column"),
    ("bad.json", b"{\"loss\": [1, 2", "not valid JSON"),
    ("ragged.json", b"{\"loss\": [1, 2], \"val_loss\": [1]}", "differ in length"),
    ("words.csv", b"epoch,loss\n0,abc\n1,0.5\n", "non-numeric"),
    ("noise.bin", bytes(range(256)) * 8, "no scalar summaries"),
    ("events.out.tfevents.123.host", b"\x18\x00\x00\x00\x00\x00\x00\x00\x01\x02", "no scalar summaries"),
])
def test_bad_files_name_the_file(tmp_path, name, content, problem):
    p = tmp_path / name
    p.write_bytes(content)
    with pytest.raises(ValueError) as ei:
        read_history(p)
    assert name in str(ei.value) and problem in str(ei.value)


def test_missing_and_empty_folder(tmp_path):
    with pytest.raises(ValueError, match="nothing-here.csv"):
        read_history(tmp_path / "nothing-here.csv")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(ValueError, match="empty_dir.*neither TensorBoard"):
        read_history(tmp_path / "empty_dir")


def _run_dir(tmp_path: Path) -> Path:
    run = tmp_path / "imported"
    run.mkdir()
    write_config(run, {"model": "x", "kind": "foreign", "classes": ["a", "b"]})
    (run / "metrics.csv").write_text(",".join(METRIC_COLUMNS) + "\n1,1,1,1,1,1,1\n")
    return run


def test_cli_history(tmp_path, capsys):
    run = _run_dir(tmp_path)
    rc = main(["history", str(run), str(keras_csv(tmp_path / "training.log"))])
    out, err = capsys.readouterr()
    assert rc == 0
    assert out.strip() == str(run)
    assert f"read {E} epochs from a Keras CSVLogger file" in err and "kept extra columns: top3_acc" in err
    df = read_metrics(run)
    assert len(df) == E
    np.testing.assert_allclose(df["val_acc"], CURVES["val_acc"], atol=1e-6)
    cfg = read_config(run)
    assert cfg["history"]["kind"] == "keras-csv" and cfg["history"]["file"] == "training.log"
    assert cfg["history"]["extra"] == ["top3_acc"] and cfg["kind"] == "foreign"  # the rest is kept


def test_cli_history_bad_input_exits_2(tmp_path, capsys):
    run = _run_dir(tmp_path)
    before = (run / "metrics.csv").read_text()
    bad = tmp_path / "broken.csv"
    bad.write_bytes(b"")
    assert main(["history", str(run), str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "broken.csv" in err
    assert (run / "metrics.csv").read_text() == before  # nothing replaced
    assert main(["history", str(tmp_path / "not-a-run"), str(keras_csv(tmp_path / "k.csv"))]) == 2
    assert "not a run directory" in capsys.readouterr().err
