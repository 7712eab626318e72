"""The distance transforms MONAI's HausdorffDTLoss(sigmoid=True) runs per call, timed alone:
for p = sigmoid(x) and the target t, per (b, c) image with any foreground, scipy's exact EDT of
the mask and of its complement (4 transforms per image). A lower bound of MONAI's time (which adds
torch work and the backward pass), on the peers' inputs: x ~ N(0, 2^2), t ~ Bernoulli(0.3).
Usage: python3 scipy_edt.py B C H W  -> prints one JSON line with the best of 3 rounds."""
import json
import sys
import time

import numpy as np
from scipy.ndimage import distance_transform_edt as edt

shape = tuple(int(v) for v in sys.argv[1:5]) if len(sys.argv) > 4 else (8, 1, 512, 512)
rng = np.random.default_rng(0)
x = rng.normal(0, 2, shape).astype(np.float32)
t = (rng.random(shape) < 0.3).astype(np.float32)
p = 1 / (1 + np.exp(-x))


def field(img):
    out = np.zeros_like(img)
    for b in range(img.shape[0]):
        for c in range(img.shape[1]):
            m = img[b, c] > 0.5
            if m.any():
                out[b, c] = edt(m) + edt(~m)
    return out


best = float("inf")
for _ in range(3):
    t0 = time.perf_counter()
    field(p)
    field(t)
    best = min(best, time.perf_counter() - t0)
print(json.dumps({"what": "scipy EDTs of MONAI HausdorffDTLoss", "shape": list(shape), "best_ms": best * 1e3}))
