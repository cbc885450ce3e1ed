"""Training throughput of cnn4 on SynthFER: our batched tensor pipeline vs pure compute vs the
usual per-sample pipeline (Dataset of PIL images -> per-item torchvision transforms -> DataLoader).

Same model (cnn4), batch size and threads for all, measured in one run. Two per-sample baselines,
because they answer different questions:

* ``naive`` -- the usual pipeline as FER tutorials and the reports write it: a Dataset of PIL
  images, per-item torchvision transforms, a DataLoader, and the model in its defaults (float32,
  NCHW). ``ratio_naive`` = what a user gains by switching to ``fer_core``'s training loop.
* ``naive_data`` -- the same per-sample data path, but feeding our compute settings (bf16
  autocast where the CPU has it, channels-last). ``ratio_data`` isolates the data path alone: on
  48×48 faces per-item PIL work is cheap next to the model, so expect ~1×.

Last line: ``train_throughput: pipeline=…img/s compute=…img/s naive=…img/s ratio_compute=… ratio_naive=…
naive_data=…img/s ratio_data=…``
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as `python bench/…` from anywhere

import torch
import torch.nn.functional as F
import torchvision.transforms.v2 as T
from PIL import Image

from fer_core.augment import build_augment
from fer_core.data.sources import open_dataset
from fer_core.models import create_model
from fer_core.preprocess import Preprocess
from fer_core.train import TrainConfig, _make_optimizer, cpu_bf16_supported, train_one_epoch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=4000, help="training faces per measured epoch")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--aug", default="basic")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    bf16 = cpu_bf16_supported()
    faces = open_dataset(f"synthetic:n={int(a.n / 0.8) + 1},seed=0").select("train")
    x, y = faces.x[:a.n], faces.y[:a.n]
    pre = Preprocess.fit(x, normalize=True)
    cfg = TrainConfig(model="cnn4", epochs=1, batch_size=a.batch_size, aug=a.aug, threads=a.threads)
    dev = torch.device("cpu")

    def fresh(channels_last: bool = True):
        torch.manual_seed(0)
        m = create_model("cnn4")
        if channels_last:
            m = m.to(memory_format=torch.channels_last)
        return m, _make_optimizer(cfg, m)

    def step(model, opt, xb, yb, fast: bool = True):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16 and fast):
            loss = F.cross_entropy(model(xb).float(), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    # warm-up (allocator, oneDNN kernel selection)
    m, o = fresh()
    xb = pre(x[:a.batch_size]).contiguous(memory_format=torch.channels_last)
    for _ in range(3):
        step(m, o, xb, y[:a.batch_size])

    # (1) our pipeline: the real train_one_epoch (index batches, per-image augmentation, preprocess)
    m, o = fresh()
    t = time.perf_counter()
    train_one_epoch(m, x, y, cfg=cfg, preprocess=pre, augment=build_augment(a.aug), optimizer=o,
                    epoch=1, device=dev, bf16=bf16)
    pipeline = len(x) / (time.perf_counter() - t)

    # (2) pure compute on pre-made input tensors
    m, o = fresh()
    xs = pre(x).contiguous(memory_format=torch.channels_last)
    t = time.perf_counter()
    for i in range(0, len(x), a.batch_size):
        step(m, o, xs[i:i + a.batch_size], y[i:i + a.batch_size])
    compute = len(x) / (time.perf_counter() - t)

    # (3) the usual per-sample pipeline
    class PILFaces(torch.utils.data.Dataset):
        def __init__(self) -> None:
            self.tf = T.Compose([T.RandomHorizontalFlip(), T.RandomAffine(10, (0.1, 0.1), (0.9, 1.1)),
                                 T.PILToTensor(), T.ToDtype(torch.float32, scale=True),
                                 T.Normalize([pre.mean], [pre.std])])

        def __len__(self) -> int:
            return len(x)

        def __getitem__(self, i: int):
            return self.tf(Image.fromarray(x[i].numpy(), mode="L")), int(y[i])

    loader = torch.utils.data.DataLoader(PILFaces(), batch_size=a.batch_size, shuffle=True, num_workers=0)
    # (3a) as usually written: float32, NCHW (one warm-up batch first: fp32 kernels are selected anew)
    m, o = fresh(channels_last=False)
    step(m, o, xs[:a.batch_size].contiguous(), y[:a.batch_size], fast=False)
    m, o = fresh(channels_last=False)
    t = time.perf_counter()
    for xb, yb in loader:
        step(m, o, xb, yb, fast=False)
    naive = len(x) / (time.perf_counter() - t)
    # (3b) the same data path feeding our compute settings
    m, o = fresh()
    t = time.perf_counter()
    for xb, yb in loader:
        step(m, o, xb.contiguous(memory_format=torch.channels_last), yb)
    naive_data = len(x) / (time.perf_counter() - t)

    print(f"settings: n={len(x)} batch={a.batch_size} threads={a.threads} bf16={bf16} channels_last=True aug={a.aug}"
          f" | naive: float32 NCHW")
    print(f"train_throughput: pipeline={pipeline:.0f}img/s compute={compute:.0f}img/s naive={naive:.0f}img/s "
          f"ratio_compute={pipeline / compute:.2f} ratio_naive={pipeline / naive:.2f} "
          f"naive_data={naive_data:.0f}img/s ratio_data={pipeline / naive_data:.2f}")


if __name__ == "__main__":
    main()
