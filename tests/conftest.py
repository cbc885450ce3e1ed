"""Shared fixtures. Tests needing the real FER2013 files use ``shared_data`` and skip when the
project's ``../shared`` folder is absent (as on a user's machine)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "fer2013"


def pytest_configure(config: pytest.Config) -> None:
    torch.set_num_threads(min(2, os.cpu_count() or 1))


def _entries(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()} if folder.is_dir() else set()


@pytest.fixture(scope="session", autouse=True)
def no_writes_to_project_runs():
    """Tests write runs under tmp_path only: fail the session if one appeared in the project's runs/."""
    runs = ROOT / "runs"
    before = _entries(runs)
    yield
    new = sorted(_entries(runs) - before)
    assert not new, f"tests created {[str(runs / n) for n in new]}; pass --out/runs_root under tmp_path"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED / "fer2013_train_publictest.npz").is_file():
        pytest.skip(f"real FER2013 files not found at {SHARED} (../shared is only present in the "
                    "project's CI/dev machines; users without it skip these tests)")
    return SHARED


def make_tiny_faces(n: int = 420, seed: int = 0):
    """A small learnable FaceSet: class c brightens a band of rows, plus noise."""
    from fer_core.data.faceset import FaceSet, splits_from_usage

    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 7
    x = (torch.rand(n, 48, 48, generator=g) * 60).to(torch.uint8)
    for c in range(7):
        x[y == c, c * 6:c * 6 + 6, :] += 150
    usage = np.array(["Training"] * (n - n // 5) + ["PublicTest"] * (n // 5))
    split = splits_from_usage(usage, y.numpy(), seed=seed)
    return FaceSet(x=x, y=y, split=split, row=np.arange(n), source="tiny")


@pytest.fixture()
def tiny_faces():
    return make_tiny_faces()


def every_page(runs_root: Path, name: str, monkeypatch: pytest.MonkeyPatch):
    """Open the dashboard on run ``name`` (only ``runs_root`` listed) and yield ``(page, AppTest)``
    for each of the seven pages after checking it rendered without an exception, that the Errors page
    shows the run's confusion-cell faces, the Dataset page its map and the Explain page its
    attribution tiles."""
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("FER_RUNS", str(runs_root))
    monkeypatch.setenv("FER_RUNS_ONLY", "1")
    monkeypatch.delenv("FER_DATA", raising=False)
    at = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=240)
    at.query_params["run"] = name
    at.run()
    run = str(runs_root / name)
    for page in ("runs", "errors", "dataset", "explain", "filters", "live", "model"):
        at.switch_page(str(ROOT / "dashboard" / "views" / f"{page}.py")).run()
        assert not at.exception, (page, [e.value for e in at.exception])
        if page == "errors":
            assert at.selectbox(key="err_run").value == run
            assert at.image and at.image[0].captions, "the confusion cell's faces"
        if page == "dataset":
            assert at.selectbox(key="ds_run").value == run
            assert at.get("plotly_chart"), "the embedding map"
        if page == "explain":
            assert at.selectbox(key="xp_run").value == run
            assert any("range" in c for im in at.image for c in im.captions), "attribution tiles"
        if page == "filters":
            assert at.selectbox(key="fv_run").value == run
        yield page, at
