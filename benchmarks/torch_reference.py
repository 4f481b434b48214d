"""The bench_reference architecture written in PyTorch, to time beside sr3 bench in the same hour.

This machine's speed drifts by up to 1.5× between hours, so a figure measured once for the
PyTorch SR3 port cannot be compared with one of ours measured on another day. This file builds
the same network (64 channels, multipliers 1,2,4,8,8, 2 residual blocks, one-head attention at
16×16, dropout 0.2, GroupNorm 32, a 64-wide noise embedding added in every block, stride-2 conv
down and nearest + conv up; 97,807,491 params, i.e. the JAX config's 97,816,707 less the 9,216 of
its qkv biases) and times an Adam + L1 train step and a forward pass at batch 4, 128×128.
Needs torch (not a dependency of sr3_jax):

  python -m venv /tmp/torch && /tmp/torch/bin/pip install torch numpy
  /tmp/torch/bin/python benchmarks/torch_reference.py 5
"""

import math
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class NoiseEmb(nn.Module):
  def __init__(self, dim):
    super().__init__()
    self.dim = dim

  def forward(self, g):
    half = self.dim // 2
    freq = torch.exp(-math.log(1e4) * torch.arange(half, dtype=torch.float32) / half)
    a = 1000.0 * g[:, None] * freq[None]
    return torch.cat([torch.sin(a), torch.cos(a)], -1)


class Res(nn.Module):
  def __init__(self, cin, cout, emb, groups, dropout, attn):
    super().__init__()
    self.n1 = nn.GroupNorm(groups, cin)
    self.c1 = nn.Conv2d(cin, cout, 3, padding=1)
    self.film = nn.Linear(emb, cout)
    self.n2 = nn.GroupNorm(groups, cout)
    self.drop = nn.Dropout(dropout)
    self.c2 = nn.Conv2d(cout, cout, 3, padding=1)
    self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()
    self.attn = attn
    if attn:
      self.an = nn.GroupNorm(groups, cout)
      self.qkv = nn.Conv2d(cout, 3 * cout, 1, bias=False)
      self.proj = nn.Conv2d(cout, cout, 1)

  def forward(self, x, e):
    h = self.c1(F.silu(self.n1(x)))
    h = h + self.film(e)[:, :, None, None]
    h = self.c2(self.drop(F.silu(self.n2(h))))
    h = h + self.skip(x)
    if self.attn:
      b, c, hh, ww = h.shape
      q, k, v = self.qkv(self.an(h)).reshape(b, 3, c, hh * ww).unbind(1)
      w = torch.softmax(torch.einsum("bci,bcj->bij", q, k) / math.sqrt(c), -1)
      h = h + self.proj(torch.einsum("bij,bcj->bci", w, v).reshape(b, c, hh, ww))
    return h


class UNet(nn.Module):
  def __init__(
    self, ch=64, mult=(1, 2, 4, 8, 8), nres=2, attn_res=(16,), size=128, groups=32, dropout=0.2
  ):
    super().__init__()
    self.emb = nn.Sequential(NoiseEmb(ch), nn.Linear(ch, 4 * ch), nn.SiLU(), nn.Linear(4 * ch, ch))
    self.inp = nn.Conv2d(6, ch, 3, padding=1)
    feats, pre, res = [ch], ch, size
    self.downs = nn.ModuleList()
    for i, m in enumerate(mult):
      for _ in range(nres):
        self.downs.append(Res(pre, ch * m, ch, groups, dropout, res in attn_res))
        pre = ch * m
        feats.append(pre)
      if i != len(mult) - 1:
        self.downs.append(nn.Conv2d(pre, pre, 3, 2, 1))
        feats.append(pre)
        res //= 2
    self.mid = nn.ModuleList(
      [Res(pre, pre, ch, groups, dropout, True), Res(pre, pre, ch, groups, dropout, False)]
    )
    self.ups = nn.ModuleList()
    for i, m in reversed(list(enumerate(mult))):
      for _ in range(nres + 1):
        self.ups.append(Res(pre + feats.pop(), ch * m, ch, groups, dropout, res in attn_res))
        pre = ch * m
      if i != 0:
        self.ups.append(
          nn.Sequential(
            nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(pre, pre, 3, padding=1)
          )
        )
        res *= 2
    self.out = nn.Sequential(nn.GroupNorm(groups, pre), nn.SiLU(), nn.Conv2d(pre, 3, 3, padding=1))

  def forward(self, x, g):
    e = self.emb(g)
    h = self.inp(x)
    skips = [h]
    for m in self.downs:
      h = m(h, e) if isinstance(m, Res) else m(h)
      skips.append(h)
    for m in self.mid:
      h = m(h, e)
    for m in self.ups:
      h = m(torch.cat([h, skips.pop()], 1), e) if isinstance(m, Res) else m(h)
    return self.out(h)


B = 4


def build(batch: int = B):
  """(train step, forward pass) closures over a seeded model, Adam and fixed random inputs."""
  torch.manual_seed(0)
  model = UNet()
  opt = torch.optim.Adam(model.parameters(), lr=1e-4)
  hr = torch.rand(batch, 3, 128, 128) * 2 - 1
  lr_up = torch.rand(batch, 3, 128, 128) * 2 - 1

  def step():
    g = torch.rand(batch)
    eps = torch.randn_like(hr)
    z = g.sqrt()[:, None, None, None] * hr + (1 - g).sqrt()[:, None, None, None] * eps
    loss = (model(torch.cat([lr_up, z], 1), g) - eps).abs().mean()
    opt.zero_grad()
    loss.backward()
    opt.step()

  def fwd():
    with torch.no_grad():
      model(torch.cat([lr_up, hr], 1), torch.full((batch,), 0.5))

  return model, step, fwd


if __name__ == "__main__":
  model, step, fwd = build()
  print("params", sum(p.numel() for p in model.parameters()))
  rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
  for name, fn in (("train", step), ("forward", fwd)):
    fn()  # warm-up
    ts = []
    for _ in range(rounds):
      t = time.perf_counter()
      fn()
      ts.append(time.perf_counter() - t)
    print(
      f"{name}: median {statistics.median(ts):.2f} s (min {min(ts):.2f}, max {max(ts):.2f}), "
      f"{B / statistics.median(ts):.3f} examples/s",
      flush=True,
    )
