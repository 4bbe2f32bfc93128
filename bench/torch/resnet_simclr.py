"""PyTorch side of bench/speed.ts: SimCLR training step and feature inference of the same
ResNet-18 (CIFAR stem) as ml/resnet.ts, on random 32x32 images. Prints one JSON line.

The model mirrors ml/resnet.ts: [0,1] -> [-1,1] rescaling, 3x3 stride-1 stem conv + BN + ReLU,
no max-pool, four stages of two basic blocks (width, 2w, 4w, 8w; 1x1 conv + BN projection
shortcut where the shape changes), global average pooling; the SimCLR head is
Linear(8w, 8w) -> ReLU -> Linear(8w, projection); NT-Xent with temperature 0.5; Adam lr 3e-4,
betas (0.9, 0.99). Both views of a batch of B images go through the network together (2B rows),
as in ml/simclr.ts. Augmentation is not timed (neither side times it here).
"""
import argparse
import json
import platform
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout, eps=1e-5, momentum=0.1)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout, eps=1e-5, momentum=0.1)
        self.proj = None
        if stride != 1 or cin != cout:
            self.proj = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, 0, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + (self.proj(x) if self.proj is not None else x))


class ResNet18(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        blocks, cin = [], width
        for stage in range(4):
            cout = width * 2**stage
            blocks += [BasicBlock(cin, cout, 1 if stage == 0 else 2), BasicBlock(cout, cout, 1)]
            cin = cout
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x):
        x = self.blocks(self.stem(x * 2 - 1))
        return x.mean(dim=(2, 3))


def nt_xent(z1, z2, temperature):
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    sim = z @ z.t() / temperature
    sim = sim - torch.eye(2 * n) * 1e9
    positive = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
    return F.cross_entropy(sim, positive)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--infer-batches", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--profile", action="store_true", help="also profile one training step: self CPU time per operator")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    width, d = a.width, 8 * a.width
    encoder = ResNet18(width)
    head = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, 128))
    opt = torch.optim.Adam(list(encoder.parameters()) + list(head.parameters()), lr=3e-4, betas=(0.9, 0.99))
    views = torch.rand(2 * a.batch, 3, a.size, a.size)

    def step():
        opt.zero_grad(set_to_none=True)
        z = head(encoder(views))
        loss = nt_xent(z[: a.batch], z[a.batch :], 0.5)
        loss.backward()
        opt.step()
        return loss.item()

    encoder.train()
    head.train()
    step()  # warm-up
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(a.steps):
        step()
    train_s = (time.perf_counter() - t0) / a.steps
    train_cpu_s = (time.process_time() - c0) / a.steps
    profile = None
    if a.profile:
        from torch.profiler import ProfilerActivity, profile as torch_profile

        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            step()
        profile = [
            {"name": e.key, "count": e.count, "self_ms": e.self_cpu_time_total / 1000}
            for e in prof.key_averages()
            if e.self_cpu_time_total > 0
        ]

    encoder.eval()
    images = torch.rand(a.batch, 3, a.size, a.size)
    with torch.no_grad():
        encoder(images)
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(a.infer_batches):
            encoder(images)
        infer_s = (time.perf_counter() - t0) / a.infer_batches
        infer_cpu_s = (time.process_time() - c0) / a.infer_batches

    print(json.dumps({
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "batch": a.batch,
        "width": width,
        "train_step_s": train_s,
        "train_step_cpu_s": train_cpu_s,
        "train_images_per_s": a.batch / train_s,
        "infer_batch_s": infer_s,
        "infer_batch_cpu_s": infer_cpu_s,
        "infer_images_per_s": a.batch / infer_s,
        **({"profile": profile} if profile is not None else {}),
    }))


if __name__ == "__main__":
    main()
