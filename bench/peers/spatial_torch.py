"""Spatial losses in PyTorch, timed for issue 10 (one forward + backward w.r.t. the logits, f32):

- `monai_hausdorff`: MONAI's HausdorffDTLoss(sigmoid=True) (its distance transforms run in scipy);
- `ssim` (eager or torch.compile): the stdlib.md `ssim` as a separable Gaussian SSIM with autograd
  (p = sigmoid(x) against the target, data range 1, VALID windows, biased variances,
  mean_b(1 - mean over c and positions of lum*cs)), 2-D with conv2d, 3-D with conv3d.

Inputs as the other peers: x ~ N(0, 2^2), t ~ Bernoulli(0.3).
Usage: python3 spatial_torch.py WHAT IMPL B C D1 D2 [D3]   (WHAT: monai_hausdorff | ssim;
IMPL: eager | compile) -> one JSON line with the median and best of the timed calls."""
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import time_reps  # noqa: E402
import torch
import torch.nn.functional as F

torch.set_num_threads(2)
what, impl = sys.argv[1], sys.argv[2]
shape = tuple(int(v) for v in sys.argv[3:])
rng = np.random.default_rng(0)
x0 = torch.from_numpy(rng.normal(0, 2, shape).astype(np.float32))
t = torch.from_numpy((rng.random(shape) < 0.3).astype(np.float32))


def gauss(window=11, sigma=1.5):
    r = torch.arange(window, dtype=torch.float64) - (window - 1) / 2
    g = torch.exp(-(r * r) / (2 * sigma * sigma))
    return g / g.sum()


def ssim_loss(x, y, window=11, sigma=1.5, k1=0.01, k2=0.03):
    p = torch.sigmoid(x)
    nd = x.dim() - 2
    conv = F.conv2d if nd == 2 else F.conv3d
    g = gauss(window, sigma).to(x.dtype)
    c = x.shape[1]

    def filt(a):  # separable VALID Gaussian, one channel group per (c)
        for ax in range(nd):
            shp = [1, 1] + [1] * nd
            shp[2 + ax] = window
            k = g.reshape(shp).expand([c] + shp[1:]).contiguous()
            a = conv(a, k, groups=c)
        return a

    c1, c2 = k1 * k1, k2 * k2
    mx, my = filt(p), filt(y)
    vx = filt(p * p) - mx * mx
    vy = filt(y * y) - my * my
    cxy = filt(p * y) - mx * my
    m = (2 * mx * my + c1) / (mx * mx + my * my + c1) * (2 * cxy + c2) / (vx + vy + c2)
    return (1 - m.flatten(1).mean(1)).mean()


if what == "monai_hausdorff":
    from monai.losses import HausdorffDTLoss

    fn = HausdorffDTLoss(sigmoid=True)
elif what == "ssim":
    fn = ssim_loss
else:
    raise SystemExit(f"unknown loss {what}")
if impl == "compile":
    fn = torch.compile(fn)


def step():
    x = x0.clone().requires_grad_(True)
    v = fn(x, t)
    v.backward()
    return v.item()


median, best, _ = time_reps(step, 7)  # common.py: 3 warm-up calls, then 7 timed
print(json.dumps({"what": what, "impl": impl, "shape": list(shape), "median_ms": median, "best_ms": best}))
