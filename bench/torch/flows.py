"""PyTorch side of bench/speed.ts: per-class flow training and the density matrix, with the
same RealNVP as ml/flow.ts (per-dimension standardisation with its log-det, two affine
couplings alternating halves, each coupling net Linear -> ReLU -> Linear with the second layer
zero-initialised, log-scale bounded by 3*tanh(r/3)), Adam lr 1e-3 betas (0.9, 0.99), batch 16,
on synthetic Gaussian features (classes x per_class rows of `dim` floats). Prints one JSON line.
"""
import argparse
import json
import math
import time

import torch
import torch.nn as nn

SCALE_BOUND = 3.0
STD_FLOOR = 1e-3


class Coupling(nn.Module):
    def __init__(self, k_in: int, k_out: int, hidden: int):
        super().__init__()
        self.l1 = nn.Linear(k_in, hidden)
        self.l2 = nn.Linear(hidden, 2 * k_out)
        bound = math.sqrt(6 / k_in)
        nn.init.uniform_(self.l1.weight, -bound, bound)
        nn.init.zeros_(self.l1.bias)
        nn.init.zeros_(self.l2.weight)
        nn.init.zeros_(self.l2.bias)

    def forward(self, cond):
        out = self.l2(torch.relu(self.l1(cond)))
        k = out.shape[1] // 2
        s = SCALE_BOUND * torch.tanh(out[:, :k] / SCALE_BOUND)
        return s, out[:, k:]


class ClassFlow(nn.Module):
    def __init__(self, x: torch.Tensor, hidden: int):
        super().__init__()
        dim = x.shape[1]
        self.d1 = dim // 2
        mean = x.mean(0)
        std = x.std(0, unbiased=False)
        std = torch.clamp(std, min=STD_FLOOR * float(std.mean()))
        self.register_buffer("mean", mean)
        self.register_buffer("inv_std", 1 / std)
        self.log_det0 = -float(torch.log(std).sum())
        self.c1 = Coupling(self.d1, dim - self.d1, hidden)
        self.c2 = Coupling(dim - self.d1, self.d1, hidden)

    def log_prob(self, x):
        u = (x - self.mean) * self.inv_std
        a, b = u[:, : self.d1], u[:, self.d1 :]
        s1, t1 = self.c1(a)
        b2 = b * torch.exp(s1) + t1
        s2, t2 = self.c2(b2)
        a2 = a * torch.exp(s2) + t2
        z = torch.cat([a2, b2], 1)
        base = -0.5 * (z * z).sum(1) - 0.5 * z.shape[1] * math.log(2 * math.pi)
        return base + s1.sum(1) + s2.sum(1) + self.log_det0


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--per-class", type=int, default=5000)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--train-classes", type=int, default=None, help="train only the first k flows (the rest stay untrained; the density matrix costs the same)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(a.classes, a.dim, generator=g)
    features = torch.cat([centres[c] + torch.randn(a.per_class, a.dim, generator=g) for c in range(a.classes)])

    flows = []
    t0, c0 = time.perf_counter(), time.process_time()
    for c in range(a.classes):
        x = features[c * a.per_class : (c + 1) * a.per_class]
        flow = ClassFlow(x, a.hidden)
        opt = torch.optim.Adam(flow.parameters(), lr=1e-3, betas=(0.9, 0.99))
        for _ in range(a.epochs if c < (a.train_classes or a.classes) else 0):
            order = torch.randperm(a.per_class, generator=g)
            for start in range(0, a.per_class, a.batch):
                xb = x[order[start : start + a.batch]]
                loss = -flow.log_prob(xb).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        flows.append(flow)
    train_s, train_cpu_s = time.perf_counter() - t0, time.process_time() - c0

    t0, c0 = time.perf_counter(), time.process_time()
    with torch.no_grad():
        density = torch.empty(features.shape[0], a.classes)
        for y, flow in enumerate(flows):
            for start in range(0, features.shape[0], 1024):
                density[start : start + 1024, y] = flow.log_prob(features[start : start + 1024])
    density_s, density_cpu_s = time.perf_counter() - t0, time.process_time() - c0
    print(json.dumps({
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "epochs": a.epochs,
        "trained_classes": a.train_classes or a.classes,
        "train_s": train_s,
        "train_cpu_s": train_cpu_s,
        "density_s": density_s,
        "density_cpu_s": density_cpu_s,
        "density_finite": bool(torch.isfinite(density).all()),
    }))


if __name__ == "__main__":
    main()
