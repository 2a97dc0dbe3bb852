"""Train the lung-nodule-ct model on synthetic phantoms and export it to ONNX.

    .venv/bin/pip install -e '.[train]'      # torch 2.13.0, CPU build; never needed to run the node
    .venv/bin/python models/lung-nodule-ct/train.py [--steps 3000] [--anatomies 100] [--seed 0]

Seeded and CPU-only: a fixed number of steps (not a time budget) so that a seed gives the same model;
the default takes about 25 minutes on 2 idle cores (8 to render, 17 to train). Training phantoms use
seeds 0..(anatomies-1); post-processing thresholds in the card were chosen on seeds 50000..50079;
`pacs-node models evaluate` draws held-out series from seeds >= 100000, which neither step sees.
Inputs and targets go through node.analyse.preprocess, the same code the node runs, so the network sees
at inference exactly what it learned on. Writes model.onnx beside this file and records its sha256 and
the training settings in model.toml.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from node.analyse.card import load_card, replace_table  # noqa: E402
from node.analyse.preprocess import labels_to_model, plan_2d, to_model  # noqa: E402
from node.synth.phantom import make_anatomy  # noqa: E402


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


def make_dataset(anatomies: int, slices_per: int, seed: int, card_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """Rendered slices -> model inputs (N, 1, H, W) and soft targets (N, C, H, W), float16 to save memory."""
    card = load_card(card_dir, verify=False)
    classes = 1 + len(card.labels)
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    start = time.monotonic()
    for a in range(anatomies):
        # Half the nodules touch a vessel: the look-alike case the network must learn to separate.
        anatomy, _, _ = make_anatomy(a, slices=200, nodules=int(rng.integers(6, 14)), vessel_attached=0.5)
        plan = plan_2d((anatomy.rows, anatomy.columns), (anatomy.pixel_spacing,) * 2, card.input)
        noise = np.random.default_rng([a, 99])
        zs = []
        for nodule in anatomy.nodules:  # slices through every nodule, centre and edges
            cz, c = nodule.centre_mm[2], nodule.semi_axes_mm[2]
            zs += list(rng.uniform(cz - 0.9 * c, cz + 0.9 * c, 3))
        length = anatomy.z_apex - anatomy.z_base
        zs += list(rng.uniform(anatomy.z_base - 0.05 * length, anatomy.z_apex + 0.05 * length, slices_per))
        spec = card.input
        offsets = [n * spec.context_spacing_mm for n in range(-spec.context_slices, spec.context_slices + 1)]
        for z in zs:
            # The centre slice gives the target; neighbours along z give the context channels.
            channels = []
            for dz in offsets:
                hu, labels_at = anatomy.render(float(z + dz), noise)
                channels.append(to_model(hu, plan, spec))
                if dz == 0:
                    labels = labels_at
            xs.append(np.stack(channels).astype(np.float16))
            ys.append(labels_to_model(labels, plan, classes).astype(np.float16))
        if (a + 1) % 10 == 0:
            print(
                f"  data: {a + 1}/{anatomies} phantoms, {len(xs)} slices, {time.monotonic() - start:.0f} s", flush=True
            )
    return np.stack(xs), np.stack(ys)


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
    weights = torch.tensor([1.0, 1.0, 10.0][: logits.shape[1]]).view(1, -1, 1, 1)
    ce = -(weights * target * logp).sum(dim=1).mean()
    p = logp.exp()
    inter = (p * target).sum(dim=(2, 3))
    total = p.sum(dim=(2, 3)) + target.sum(dim=(2, 3))
    dice = 1 - (2 * inter + 1) / (total + 1)  # (crops, classes)
    present = (target.sum(dim=(2, 3)) > 1).float()
    dice_fg = (dice[:, 1:] * present[:, 1:]).sum() / present[:, 1:].sum().clamp(min=1)
    return ce + dice_fg


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3000, help="optimiser steps of 12 crops of 128x128")
    parser.add_argument("--anatomies", type=int, default=100, help="training phantoms (seeds 0..N-1)")
    parser.add_argument("--slices-per", type=int, default=16, help="random slices per phantom, plus nodules")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--base", type=int, default=12, help="U-Net channels at full resolution")
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    print(f"rendering {args.anatomies} training phantoms ...", flush=True)
    x, y = make_dataset(args.anatomies, args.slices_per, args.seed, HERE)
    print(f"dataset: {x.shape[0]} slices of {x.shape[2]}x{x.shape[3]}, {y.shape[1]} classes", flush=True)

    classes = y.shape[1]
    model = UNet(classes, x.shape[1], args.base)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    start = time.monotonic()
    running = 0.0
    model.train()
    for step in range(args.steps):
        lr = 3e-3 * 0.5 * (1 + np.cos(np.pi * step / args.steps)) + 1e-5
        for g in opt.param_groups:
            g["lr"] = lr
        xb, yb = crops(x, y, 12, 128, rng)
        loss = loss_fn(model(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        running = 0.95 * running + 0.05 * loss.item() if step else loss.item()
        if (step + 1) % 50 == 0:
            elapsed = time.monotonic() - start
            print(f"  step {step + 1:5d}/{args.steps}  loss {running:.4f}  lr {lr:.5f}  {elapsed:5.0f} s", flush=True)

    model.eval()
    onnx_path = args.out / "model.onnx"
    example = torch.from_numpy(x[:1].astype(np.float32))
    torch.onnx.export(
        model,
        (example,),
        str(onnx_path),
        dynamo=False,
        opset_version=17,
        input_names=["image"],
        output_names=["logits"],
        dynamic_axes={"image": {0: "batch", 2: "rows", 3: "columns"}, "logits": {0: "batch", 2: "rows", 3: "columns"}},
    )
    digest = hashlib.sha256(onnx_path.read_bytes()).hexdigest()
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
        "seconds": round(time.monotonic() - start),
        "torch": torch.__version__,
    }
    # json.dumps writes strings and numbers the way TOML reads them.
    training = "[training]\n" + "".join(f"{key} = {json.dumps(value)}\n" for key, value in facts.items())
    card_path.write_text(replace_table(text, "training", training), encoding="utf-8")
    print(
        f"wrote {onnx_path} ({onnx_path.stat().st_size / 1e6:.1f} MB, sha256 {digest[:12]}...), "
        f"{args.steps} steps in {time.monotonic() - start:.0f} s; card updated",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
