"""fer_core.foreign.logger.RunLogger: a user's own loop writes a run that LoadedRun opens."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from fer_core.data.synthetic import generate
from fer_core.foreign.logger import RunLogger
from fer_core.labels import EMOTIONS
from fer_core.model import LoadedRun
from fer_core.preprocess import Preprocess
from fer_core.runs import inspect_run, read_config, read_metrics

ROOT = Path(__file__).resolve().parents[1]


class TinyCNN(nn.Module):
    def __init__(self, n: int = 7) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.head = nn.Linear(16, n)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


class Unscriptable(TinyCNN):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = sum(1.0 for _ in range(1))  # a generator expression: TorchScript rejects it
        return super().forward(x) * scale


@pytest.fixture(scope="module")
def synth():
    x, y = generate(n=300)
    return torch.as_tensor(x), torch.as_tensor(y)


def train_one_epoch(model: nn.Module, x: torch.Tensor, y: torch.Tensor, pre: Preprocess) -> tuple[float, float]:
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    losses, right = [], 0
    for i in range(0, len(x), 60):
        xb, yb = pre(x[i:i + 60]), y[i:i + 60]
        out = model(xb)
        loss = nn.functional.cross_entropy(out, yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        right += int((out.argmax(1) == yb).sum())
    return float(np.mean(losses)), right / len(x)


def own_probs(model: nn.Module, faces: torch.Tensor, pre: Preprocess) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        return torch.softmax(model(pre(faces)), 1).numpy()


def test_round_trip_loads_with_loaded_run(tmp_path, synth):
    x, y = synth
    pre = Preprocess(size=48)
    model = TinyCNN()
    run = tmp_path / "my-cnn"
    with RunLogger(run, data="synthetic:n=300", epochs=1, config={"lr": 3e-3, "batch_size": 60}) as log:
        cfg = read_config(run)  # exists from the start, before any epoch
        assert cfg["train"] == {"lr": 3e-3, "batch_size": 60, "epochs": 1} and "kind" not in cfg
        assert not cfg.get("finished")
        tl, ta = train_one_epoch(model, x[:240], y[:240], pre)
        vp = own_probs(model, x[240:], pre)
        vl = float(nn.functional.nll_loss(torch.log(torch.as_tensor(vp)), y[240:]))
        va = float((vp.argmax(1) == y[240:].numpy()).mean())
        log.epoch(epoch=1, train_loss=tl, train_acc=ta, val_loss=vl, val_acc=va, lr=3e-3, top3=0.9)
        info = inspect_run(run)  # curves but no model yet
        assert info.epochs_done == 1 and not info.error and not info.has_model  # listed with its curves
        path = log.save_model(model)
    assert path == run / "model.pt"
    cfg = read_config(run)
    assert cfg["kind"] == "foreign" and cfg["finished"] is True and cfg["model"] == "TinyCNN"
    f = cfg["foreign"]
    assert f["format"] == "torchscript" and f["file"] == "model.pt" and f["output"] == "logits"
    assert f["input"] == {"channels": 1, "size": 48, "layout": "nchw"}
    assert f["model_classes"] == list(EMOTIONS) and f["columns"] is None and f["trust_code"] is False
    assert cfg["preprocess"] == pre.to_dict() and cfg["classes"] == list(EMOTIONS)

    df = read_metrics(run)
    assert df["epoch"].tolist() == [1]
    np.testing.assert_allclose(df[["train_loss", "train_acc", "val_loss", "val_acc", "lr", "top3"]].iloc[0],
                               [tl, ta, vl, va, 3e-3, 0.9], rtol=1e-6)
    assert df["time_s"].iloc[0] > 0

    lr = LoadedRun(run)
    assert lr.kind == "foreign"
    np.testing.assert_allclose(lr.probs(x.numpy()), own_probs(model, x, pre), atol=1e-5)


def test_state_dict_with_code_and_class_order(tmp_path, synth):
    x, _ = synth
    code = tmp_path / "src" / "net.py"
    code.parent.mkdir()
    code.write_text(textwrap.dedent("""
        import torch.nn as nn
        class Net(nn.Module):
            def __init__(self, width=4):
                super().__init__()
                self.conv = nn.Conv2d(1, width, 3)
                self.fc = nn.Linear(width, 8)
            def forward(self, x):
                return self.fc(self.conv(x).mean((2, 3)))
    """))
    sys.path.insert(0, str(code.parent))
    try:
        from net import Net  # noqa: E402 - the user's own module
    finally:
        sys.path.pop(0)
    torch.manual_seed(1)
    model = Net(width=5)
    # FER+ order and spelling with contempt: the run keeps FER2013's seven classes
    ferplus = ["neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt"]
    pre = Preprocess(size=40, mean=0.5, std=0.25, normalize=True)
    run = tmp_path / "sd"
    log = RunLogger(run, classes=ferplus, preprocess=pre.to_dict())
    log.save_model(model, how="state_dict", code=f"{code}:Net", kwargs={"width": 5})
    cfg = read_config(run)
    assert cfg["foreign"]["code"] == "net.py:Net" and (run / "net.py").is_file()
    assert cfg["foreign"]["trust_code"] is True and cfg["classes"] == list(EMOTIONS)
    assert cfg["foreign"]["columns"] == [ferplus.index(c) for c in
                                         ("anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral")]
    assert not cfg.get("finished")  # no context manager, no finish()
    logits = model.eval()(pre(x[:20])).detach()[:, cfg["foreign"]["columns"]]
    np.testing.assert_allclose(LoadedRun(run).probs(x[:20].numpy()), torch.softmax(logits, 1).numpy(), atol=1e-5)


def test_trace_fallback_and_bad_models(tmp_path, synth):
    x, _ = synth
    torch.manual_seed(2)
    model = Unscriptable()
    log = RunLogger(tmp_path / "traced")
    log.save_model(model, example_input=torch.zeros(3, 1, 48, 48))
    np.testing.assert_allclose(LoadedRun(tmp_path / "traced").probs(x[:16].numpy()),
                               own_probs(model, x[:16], Preprocess()), atol=1e-5)
    with pytest.raises(ValueError, match="outputs 7 values per face but 3 classes"):
        RunLogger(tmp_path / "three", classes=["a", "b", "c"]).save_model(TinyCNN())
    with pytest.raises(ValueError, match="needs code="):
        RunLogger(tmp_path / "nocode").save_model(TinyCNN(), how="state_dict")
    assert not (tmp_path / "three" / "model.pt").exists() and "kind" not in read_config(tmp_path / "three")


def test_exception_leaves_run_resumable(tmp_path):
    run = tmp_path / "crashy"
    with pytest.raises(RuntimeError, match="boom"):
        with RunLogger(run, epochs=5) as log:
            log.epoch(train_loss=1.0, val_acc=0.3)
            log.epoch(train_loss=0.9)
            raise RuntimeError("boom")
    cfg = read_config(run)
    assert not cfg.get("finished")
    info = inspect_run(run)
    assert info.epochs_done == 2 and info.running  # planned 5, updated just now, not finished
    t2 = read_metrics(run)["time_s"].iloc[-1]
    with RunLogger(run) as log:  # continue the same run
        assert read_config(run)["train"]["epochs"] == 5
        row = log.epoch(val_acc=0.5, time_s=None)
        assert row["epoch"] == 3 and row["time_s"] >= t2
        log.epoch(epoch=2, train_loss=0.5)  # logged again: replaces 2 and drops 3
    df = read_metrics(run)
    assert df["epoch"].tolist() == [1, 2] and df["train_loss"].tolist() == [1.0, 0.5]
    assert math.isnan(df["val_acc"].iloc[1]) and df["val_acc"].iloc[0] == 0.3
    assert read_config(run)["finished"] is True
    other = tmp_path / "registry-run"
    other.mkdir()
    (other / "config.json").write_text('{"model": "cnn4"}')
    with pytest.raises(ValueError, match="not written by RunLogger"):
        RunLogger(other)


def test_a_killed_loop_leaves_a_readable_run(tmp_path):
    run = tmp_path / "killed"
    script = textwrap.dedent(f"""
        import sys
        from fer_core import RunLogger
        log = RunLogger({str(run)!r}, epochs=10**9)
        print("ready", flush=True)
        e = 0
        while True:
            e += 1
            log.epoch(epoch=e, train_loss=1.0 / e, val_acc=0.5, note=float(e), **{{f"x{{i}}": i for i in range(30)}})
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(1.0)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    df = read_metrics(run)
    cfg = read_config(run)
    assert len(df) > 2 and df["epoch"].tolist() == list(range(1, len(df) + 1)) and not cfg.get("finished")
    assert inspect_run(run).epochs_done == len(df)


def test_fer_core_exports_runlogger_lazily():
    code = ("import sys, fer_core; assert 'torch' not in sys.modules, 'import fer_core pulled in torch'; "
            "from fer_core import RunLogger; import fer_core.foreign.logger as m; assert RunLogger is m.RunLogger")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
