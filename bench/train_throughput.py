"""Training throughput of cnn4 on SynthFER: the real training pipeline vs pure compute, per
augmentation warp backend (:data:`fer_core.augment.BACKENDS`).

* ``pipeline`` -- :func:`fer_core.train.train_one_epoch` as training runs it: index batches of the
  in-memory uint8 faces, per-image augmentation with the variant's backend, preprocessing, step.
* ``compute`` -- the same steps (model, batch size, threads, bf16 autocast where the CPU has it,
  channels-last) on pre-made input tensors: what training would cost with a free input pipeline.

The variants are measured alternately, ``--repeats`` rounds of (pipeline, compute) per variant, so
a machine whose load drifts affects them alike; each line reports the medians and their ratio.
One line per variant::

    train_throughput backend=cv2: pipeline=…img/s compute=…img/s ratio=…

``--naive`` also measures the usual per-sample pipeline (Dataset of PIL images -> per-item
torchvision transforms -> DataLoader), once as FER tutorials write it (float32, NCHW) and once
feeding our compute settings, and prints::

    train_throughput naive: naive=…img/s naive_data=…img/s

Run from the project root with the project installed (``pip install -r requirements.txt``).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from fer_core.augment import BACKENDS, build_augment
from fer_core.data import open_dataset
from fer_core.models import create_model
from fer_core.preprocess import Preprocess
from fer_core.device import cpu_bf16_supported
from fer_core.train import TrainConfig, make_optimizer, train_one_epoch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=4000, help="training faces per measured epoch")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--aug", default="basic")
    ap.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated warp backends")
    ap.add_argument("--repeats", type=int, default=3, help="alternating rounds per backend (medians reported)")
    ap.add_argument("--naive", action="store_true", help="also measure the per-sample DataLoader pipeline")
    a = ap.parse_args()
    backends = [b.strip() for b in a.backends.split(",") if b.strip()]
    unknown = set(backends) - set(BACKENDS)
    if unknown:
        ap.error(f"unknown backend(s) {sorted(unknown)}; choose from {BACKENDS}")
    torch.set_num_threads(a.threads)
    bf16 = cpu_bf16_supported()
    faces = open_dataset(f"synthetic:n={int(a.n / 0.8) + 1},seed=0").select("train")
    x, y = faces.x[:a.n], faces.y[:a.n]
    pre = Preprocess.fit(x, normalize=True)
    cfg = TrainConfig(model="cnn4", epochs=1, batch_size=a.batch_size, aug=a.aug, threads=a.threads)
    dev = torch.device("cpu")
    xs = pre(x).contiguous(memory_format=torch.channels_last)

    def fresh(channels_last: bool = True):
        torch.manual_seed(0)
        m = create_model("cnn4")
        if channels_last:
            m = m.to(memory_format=torch.channels_last)
        return m, make_optimizer(cfg, m)

    def step(model, opt, xb, yb, fast: bool = True):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16 and fast):
            loss = F.cross_entropy(model(xb).float(), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def pipeline(backend: str) -> float:
        m, o = fresh()
        aug = build_augment(a.aug, backend=backend)
        t = time.perf_counter()
        train_one_epoch(m, x, y, cfg=cfg, preprocess=pre, augment=aug, optimizer=o, epoch=1,
                        device=dev, bf16=bf16)
        return len(x) / (time.perf_counter() - t)

    def compute() -> float:
        m, o = fresh()
        t = time.perf_counter()
        for i in range(0, len(x), a.batch_size):
            step(m, o, xs[i:i + a.batch_size], y[i:i + a.batch_size])
        return len(x) / (time.perf_counter() - t)

    # warm-up (allocator, oneDNN kernel selection, each backend's first call)
    m, o = fresh()
    for _ in range(3):
        step(m, o, xs[:a.batch_size], y[:a.batch_size])
    for b in backends:
        build_augment(a.aug, backend=b)(pre.to_unit(x[:a.batch_size]))

    results: dict[str, dict[str, list[float]]] = {b: {"pipeline": [], "compute": []} for b in backends}
    for _ in range(a.repeats):
        for b in backends:
            results[b]["pipeline"].append(pipeline(b))
            results[b]["compute"].append(compute())

    print(f"settings: n={len(x)} batch={a.batch_size} threads={a.threads} bf16={bf16} channels_last=True "
          f"aug={a.aug} repeats={a.repeats}")
    for b in backends:
        p, c = statistics.median(results[b]["pipeline"]), statistics.median(results[b]["compute"])
        print(f"train_throughput backend={b}: pipeline={p:.0f}img/s compute={c:.0f}img/s ratio={p / c:.2f}")

    if a.naive:
        print(f"train_throughput naive: {naive_pipeline(x, y, pre, a.batch_size, fresh, step)}")


def naive_pipeline(x, y, pre, batch_size, fresh, step) -> str:
    """The usual per-sample pipeline, as written (float32 NCHW) and feeding our compute settings."""
    import torchvision.transforms.v2 as T
    from PIL import Image

    class PILFaces(torch.utils.data.Dataset):
        def __init__(self) -> None:
            self.tf = T.Compose([T.RandomHorizontalFlip(), T.RandomAffine(10, (0.1, 0.1), (0.9, 1.1)),
                                 T.PILToTensor(), T.ToDtype(torch.float32, scale=True),
                                 T.Normalize([pre.mean], [pre.std])])

        def __len__(self) -> int:
            return len(x)

        def __getitem__(self, i: int):
            return self.tf(Image.fromarray(x[i].numpy(), mode="L")), int(y[i])

    loader = torch.utils.data.DataLoader(PILFaces(), batch_size=batch_size, shuffle=True, num_workers=0)
    # as usually written: float32, NCHW (one warm-up batch first: fp32 kernels are selected anew)
    m, o = fresh(channels_last=False)
    step(m, o, pre(x[:batch_size]).contiguous(), y[:batch_size], fast=False)
    m, o = fresh(channels_last=False)
    t = time.perf_counter()
    for xb, yb in loader:
        step(m, o, xb, yb, fast=False)
    naive = len(x) / (time.perf_counter() - t)
    m, o = fresh()
    t = time.perf_counter()
    for xb, yb in loader:
        step(m, o, xb.contiguous(memory_format=torch.channels_last), yb)
    naive_data = len(x) / (time.perf_counter() - t)
    return f"naive={naive:.0f}img/s naive_data={naive_data:.0f}img/s"


if __name__ == "__main__":
    main()
