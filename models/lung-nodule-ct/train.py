"""Train the lung-nodule-ct model on synthetic phantoms and export it to ONNX.

    .venv/bin/pip install -e '.[train]'      # torch 2.13.0, CPU build; never needed to run the node
    .venv/bin/python models/lung-nodule-ct/train.py [--steps 3000] [--anatomies 100] [--seed 0]
        [--workers N] [--device cpu|cuda] [--dataset DIR] [--out MODEL_DIR]

Seeded: a fixed number of steps (not a time budget), and each training phantom draws from its own
generator (``[seed, index]``), so the data are the same on any number of rendering processes
(``--workers``, default every core). Measured with the defaults on 2 idle cores: rendering 160 s, training
999 s, 19.5 minutes in all; on an H200 with 16 cores (``--device cuda``) rendering took 173 s (four input
specs at once) and training 107-130 s (five trainings sharing the GPU).
Training phantoms use seeds 0..(anatomies-1); post-processing thresholds in the card were chosen on seeds
50000..50079; `pacs-node models evaluate` draws held-out series from seeds >= 100000, which neither step
sees. Inputs and targets go through node.analyse.preprocess, the same code the node runs, so the network
sees at inference exactly what it learned on. The input spec (grid, spacing, context slices) comes from
``--out``'s model.toml, so a variant is a copied folder with an edited card (models/lung-nodule-ct/sweep.py
compares variants that way). Writes model.onnx into ``--out`` and records its sha256 and the training
settings in its model.toml.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import re
import sys
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from node.analyse.card import InputSpec, load_card, replace_table  # noqa: E402
from node.analyse.preprocess import labels_to_model, plan_2d, to_model  # noqa: E402
from node.synth.phantom import Anatomy, make_anatomy  # noqa: E402


def block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """A small 2-D U-Net: four levels, ``base`` channels at full resolution, logits out."""

    def __init__(self, classes: int, channels_in: int = 1, base: int = 12) -> None:
        super().__init__()
        c = [base, base * 2, base * 4, base * 8]
        self.enc = nn.ModuleList([block(channels_in, c[0]), block(c[0], c[1]), block(c[1], c[2]), block(c[2], c[3])])
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList([nn.ConvTranspose2d(c[i + 1], c[i], 2, stride=2) for i in range(3)])
        self.dec = nn.ModuleList([block(c[i] * 2, c[i]) for i in range(3)])
        self.head = nn.Conv2d(c[0], classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, enc in enumerate(self.enc):
            x = enc(x if i == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        for i in (2, 1, 0):
            x = self.dec[i](torch.cat([self.up[i](x), skips[i]], dim=1))
        return self.head(x)


def training_depths(anatomy: Anatomy, rng: np.random.Generator, slices_per: int) -> list[float]:
    """Slice positions (mm) to learn from: three through every nodule (centre and edges), plus random ones."""
    zs: list[float] = []
    for nodule in anatomy.nodules:
        cz, c = nodule.centre_mm[2], nodule.semi_axes_mm[2]
        zs += [float(z) for z in rng.uniform(cz - 0.9 * c, cz + 0.9 * c, 3)]
    length = anatomy.z_apex - anatomy.z_base
    zs += [float(z) for z in rng.uniform(anatomy.z_base - 0.05 * length, anatomy.z_apex + 0.05 * length, slices_per)]
    return zs


def render_phantom(
    index: int, seed: int, slices_per: int, specs: Sequence[InputSpec], classes: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """One training phantom -> per input spec: inputs (n, channels, H, W) and soft targets (n, C, H, W).

    Each phantom draws from its own generator (``[seed, index]``), so phantoms render in any order, on
    any number of processes, with the same result. Slices shared by several specs render once.
    """
    cv2.setNumThreads(1)  # one process per core renders; OpenCV's own threads would oversubscribe
    rng = np.random.default_rng([seed, index])
    # Half the nodules touch a vessel: the look-alike case the network must learn to separate.
    anatomy, _, _ = make_anatomy(index, slices=200, nodules=int(rng.integers(6, 14)), vessel_attached=0.5)
    noise = np.random.default_rng([index, 99])
    plans = [plan_2d((anatomy.rows, anatomy.columns), (anatomy.pixel_spacing,) * 2, spec) for spec in specs]
    offsets = [[n * s.context_spacing_mm for n in range(-s.context_slices, s.context_slices + 1)] for s in specs]
    xs: list[list[np.ndarray]] = [[] for _ in specs]
    ys: list[list[np.ndarray]] = [[] for _ in specs]
    for z in training_depths(anatomy, rng, slices_per):
        # The centre slice gives the target; neighbours along z give the context channels.
        rendered = {dz: anatomy.render(z + dz, noise) for dz in sorted({dz for o in offsets for dz in o})}
        for n, (spec, plan) in enumerate(zip(specs, plans, strict=True)):
            channels = [to_model(rendered[dz][0], plan, spec) for dz in offsets[n]]
            xs[n].append(np.stack(channels).astype(np.float16))
            ys[n].append(labels_to_model(rendered[0.0][1], plan, classes).astype(np.float16))
    return [(np.stack(x), np.stack(y)) for x, y in zip(xs, ys, strict=True)]


def make_dataset(
    anatomies: int, slices_per: int, seed: int, specs: Sequence[InputSpec], classes: int, workers: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Rendered slices for each spec: model inputs (N, channels, H, W) and soft targets (N, C, H, W),
    float16 to save memory; phantoms ``0..anatomies-1`` on ``workers`` processes."""
    start = time.monotonic()
    parts: list[list[tuple[np.ndarray, np.ndarray]]] = []
    job = partial(render_phantom, seed=seed, slices_per=slices_per, specs=specs, classes=classes)
    # fork: the children inherit the imported modules; nothing torch-related has run yet.
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        for done, part in enumerate(pool.imap(job, range(anatomies)), start=1):
            parts.append(part)
            if done % 10 == 0 or done == anatomies:
                slices = sum(len(p[0][0]) for p in parts)
                print(
                    f"  data: {done}/{anatomies} phantoms, {slices} slices, {time.monotonic() - start:.0f} s",
                    flush=True,
                )
    return [
        (np.concatenate([p[n][0] for p in parts]), np.concatenate([p[n][1] for p in parts])) for n in range(len(specs))
    ]


def crops(x: np.ndarray, y: np.ndarray, batch: int, size: int, rng: np.random.Generator) -> tuple[torch.Tensor, ...]:
    """Random crops: half centred on a nodule pixel so the rare class is seen often, a quarter on a
    vessel in the lung (dense pixels labelled lung: the look-alikes that make false positives), the
    rest anywhere."""
    idx = rng.integers(0, len(x), batch)
    h, w = x.shape[2:]
    xb = np.empty((batch, x.shape[1], size, size), np.float32)
    yb = np.empty((batch, y.shape[1], size, size), np.float32)
    for n, i in enumerate(idx):
        r0, c0 = rng.integers(0, h - size + 1), rng.integers(0, w - size + 1)
        centre = x.shape[1] // 2
        if n % 4 != 3:
            # the card's window maps -1200..400 HU to 0..1: above 0.5 is denser than -400 HU
            hits = np.argwhere(y[i, -1] > 0.3) if n % 2 == 0 else np.argwhere((y[i, 1] > 0.9) & (x[i, centre] > 0.5))
            if len(hits):
                r, c = hits[rng.integers(0, len(hits))]
                r0 = int(np.clip(r - rng.integers(16, size - 16), 0, h - size))
                c0 = int(np.clip(c - rng.integers(16, size - 16), 0, w - size))
        xb[n] = x[i, :, r0 : r0 + size, c0 : c0 + size]
        yb[n] = y[i, :, r0 : r0 + size, c0 : c0 + size]
        if rng.random() < 0.5:  # left-right flip
            xb[n], yb[n] = xb[n, :, :, ::-1], yb[n, :, :, ::-1]
        if rng.random() < 0.5:  # head-feet flip: context channels in reverse order
            xb[n] = xb[n, ::-1]
    gain = rng.uniform(0.95, 1.05, (batch, 1, 1, 1)).astype(np.float32)
    return torch.from_numpy(np.clip(xb * gain, 0, 1)), torch.from_numpy(yb)


def loss_fn(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Soft-target cross-entropy (nodule weighted) plus soft Dice per crop on the foreground classes.

    Dice per crop, not per batch: a batch-wide Dice is ruled by the largest nodule, and the small
    nodules (5-8 mm, easily taken for vessels) are the ones that need the signal.
    """
    logp = torch.log_softmax(logits, dim=1)
    weights = torch.tensor([1.0, 1.0, 10.0][: logits.shape[1]], device=logits.device).view(1, -1, 1, 1)
    ce = -(weights * target * logp).sum(dim=1).mean()
    p = logp.exp()
    inter = (p * target).sum(dim=(2, 3))
    total = p.sum(dim=(2, 3)) + target.sum(dim=(2, 3))
    dice = 1 - (2 * inter + 1) / (total + 1)  # (crops, classes)
    present = (target.sum(dim=(2, 3)) > 1).float()
    dice_fg = (dice[:, 1:] * present[:, 1:]).sum() / present[:, 1:].sum().clamp(min=1)
    return ce + dice_fg


def train(
    model: UNet, x: np.ndarray, y: np.ndarray, steps: int, rng: np.random.Generator, device: torch.device
) -> float:
    """AdamW with a cosine learning rate over ``steps`` steps of 12 crops of 128x128; returns seconds."""
    model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    start = time.monotonic()
    # Summed on the device and read every 50 steps: a read per step would wait for a GPU each time.
    running = torch.zeros((), device=device)
    model.train()
    for step in range(steps):
        lr = 3e-3 * 0.5 * (1 + np.cos(np.pi * step / steps)) + 1e-5
        for g in opt.param_groups:
            g["lr"] = lr
        xb, yb = crops(x, y, 12, 128, rng)
        loss = loss_fn(model(xb.to(device)), yb.to(device))
        opt.zero_grad()
        loss.backward()
        opt.step()
        running += loss.detach()
        if (step + 1) % 50 == 0:
            elapsed = time.monotonic() - start
            mean = running.item() / 50
            running.zero_()
            print(f"  step {step + 1:5d}/{steps}  loss {mean:.4f}  lr {lr:.5f}  {elapsed:5.0f} s", flush=True)
    model.eval()
    return time.monotonic() - start


def export(model: UNet, channels: int, size: tuple[int, int], path: Path) -> str:
    """Write the network as ONNX (opset 17, batch and grid dynamic); return the file's sha256."""
    model.cpu().eval()
    example = torch.zeros((1, channels, *size), dtype=torch.float32)
    torch.onnx.export(
        model,
        (example,),
        str(path),
        dynamo=False,
        opset_version=17,
        input_names=["image"],
        output_names=["logits"],
        dynamic_axes={"image": {0: "batch", 2: "rows", 3: "columns"}, "logits": {0: "batch", 2: "rows", 3: "columns"}},
    )
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3000, help="optimiser steps of 12 crops of 128x128")
    parser.add_argument("--anatomies", type=int, default=100, help="training phantoms (seeds 0..N-1)")
    parser.add_argument("--slices-per", type=int, default=16, help="random slices per phantom, plus nodules")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--base", type=int, default=12, help="U-Net channels at full resolution")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes that render phantoms")
    parser.add_argument("--device", default="cpu", help="torch device to train on (default cpu; cuda if there)")
    parser.add_argument(
        "--dataset",
        type=Path,
        help="train on x.npy and y.npy in this folder, rendered beforehand for the card's input spec",
    )
    parser.add_argument(
        "--out", type=Path, default=HERE, help="model folder: its model.toml gives the input spec; gets model.onnx"
    )
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    card = load_card(args.out, verify=False)
    classes = 1 + len(card.labels)
    started = time.monotonic()
    if args.dataset is not None:
        # Memory-mapped: several trainings on one machine share the rendered slices through the page cache.
        x, y = np.load(args.dataset / "x.npy", mmap_mode="r"), np.load(args.dataset / "y.npy", mmap_mode="r")
    else:
        print(f"rendering {args.anatomies} training phantoms on {args.workers} processes ...", flush=True)
        ((x, y),) = make_dataset(args.anatomies, args.slices_per, args.seed, [card.input], classes, args.workers)
    if x.shape[1] != card.input.channels or y.shape[1] != classes or x.shape[2:] != tuple(card.input.size):
        raise SystemExit(f"dataset {x.shape} / {y.shape} does not fit the card's input spec in {args.out}")
    print(f"dataset: {x.shape[0]} slices of {x.shape[2]}x{x.shape[3]}, {y.shape[1]} classes", flush=True)

    model = UNet(classes, x.shape[1], args.base)
    seconds = train(model, x, y, args.steps, rng, torch.device(args.device))
    onnx_path = args.out / card.model.file
    digest = export(model, x.shape[1], (x.shape[2], x.shape[3]), onnx_path)
    card_path = args.out / "model.toml"
    text = card_path.read_text(encoding="utf-8")
    text = re.sub(r'^sha256 = ".*"$', f'sha256 = "{digest}"', text, count=1, flags=re.M)
    facts = {
        "script": "models/lung-nodule-ct/train.py",
        "seed": args.seed,
        "steps": args.steps,
        "crops_per_step": 12,
        "crop_size": 128,
        "phantoms": args.anatomies,
        "phantom_seeds": f"0..{args.anatomies - 1}",
        "training_slices": int(x.shape[0]),
        "base_channels": args.base,
        "seconds": round(seconds),
        "device": args.device,
        "torch": torch.__version__,
    }
    # json.dumps writes strings and numbers the way TOML reads them.
    training = "[training]\n" + "".join(f"{key} = {json.dumps(value)}\n" for key, value in facts.items())
    card_path.write_text(replace_table(text, "training", training), encoding="utf-8")
    print(
        f"wrote {onnx_path} ({onnx_path.stat().st_size / 1e6:.1f} MB, sha256 {digest[:12]}...), "
        f"{args.steps} steps in {seconds:.0f} s ({time.monotonic() - started:.0f} s in all); card updated",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
