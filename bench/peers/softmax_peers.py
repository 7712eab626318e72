"""softmax_ce and softmax_dice (stdlib.md Part 2, defaults) in PyTorch (eager or torch.compile)
and JAX (jit of value_and_grad), timed for issue 11: one forward + backward w.r.t. the logits,
f32, a one-hot float target [B, C, *S] as lossc reads it.

Usage: python3 softmax_peers.py LOSS IMPL B C D1 D2 [D3]   (LOSS: softmax_ce | softmax_dice;
IMPL: eager | compile | jax) -> one JSON line with the median and best of the timed calls.
`python3 softmax_peers.py --check` compares every implementation with the golden values in
float64 (tests/golden)."""
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import time_reps  # noqa: E402


def torch_loss(name):
    import torch

    def softmax_ce(z, y):
        return -(y * torch.log_softmax(z, 1)).sum(1).mean()

    def softmax_dice(z, y, smooth=1.0):
        p = torch.softmax(z, 1)
        axes = tuple(range(2, z.dim()))
        i = (p * y).sum(axes)
        d = (2 * i + smooth) / (p.sum(axes) + y.sum(axes) + smooth)
        return (1 - d).mean()

    return {"softmax_ce": softmax_ce, "softmax_dice": softmax_dice}[name]


def jax_loss(name):
    import jax
    import jax.numpy as jnp

    def softmax_ce(z, y):
        return -(y * jax.nn.log_softmax(z, 1)).sum(1).mean()

    def softmax_dice(z, y, smooth=1.0):
        p = jax.nn.softmax(z, 1)
        axes = tuple(range(2, z.ndim))
        i = (p * y).sum(axes)
        d = (2 * i + smooth) / (p.sum(axes) + y.sum(axes) + smooth)
        return (1 - d).mean()

    return {"softmax_ce": softmax_ce, "softmax_dice": softmax_dice}[name]


def check():
    import jax
    import torch

    jax.config.update("jax_enable_x64", True)
    root = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "golden")
    for name in ["softmax_ce", "softmax_dice"]:
        g = json.load(open(os.path.join(root, name + ".json")))
        worst = 0.0
        for c in g["cases"]:
            if any(v not in (0, 1.0, 0.0, "image") for k, v in c["params"].items() if k != "include_background" and k != "smooth"):
                continue
            if c["params"].get("reduction", "image") != "image" or c["params"].get("include_background", 1) != 1:
                continue
            if c["params"].get("label_smoothing", 0) != 0 or c["params"].get("smooth", 1.0) != 1.0:
                continue
            shape = c["inputs"]["logits"]["shape"]
            z = np.array(c["inputs"]["logits"]["data"]).reshape(shape)
            y = np.array(c["inputs"]["target"]["data"]).reshape(shape)
            zt = torch.tensor(z, requires_grad=True)
            v = torch_loss(name)(zt, torch.tensor(y))
            v.backward()
            jv, jg = jax.value_and_grad(jax_loss(name))(z, y)
            want = np.array(c["grad"]["logits"]["data"]).reshape(shape)
            for val, grad in [(v.item(), zt.grad.numpy()), (float(jv), np.asarray(jg))]:
                worst = max(worst, abs(val - c["value"]), np.abs(grad - want).max())
        print(json.dumps({"check": name, "max_abs_diff": worst}))


def main():
    name, impl = sys.argv[1], sys.argv[2]
    shape = tuple(int(v) for v in sys.argv[3:])
    rng = np.random.default_rng(0)
    z0 = rng.normal(0, 2, shape).astype(np.float32)
    labels = rng.integers(0, shape[1], (shape[0],) + shape[2:])
    y0 = (np.arange(shape[1]).reshape((1, -1) + (1,) * (len(shape) - 2)) == labels[:, None]).astype(np.float32)
    if impl == "jax":
        import jax

        f = jax.jit(jax.value_and_grad(jax_loss(name)))
        z, y = jax.device_put(z0), jax.device_put(y0)

        def step():
            v, g = f(z, y)
            g.block_until_ready()
    else:
        import torch

        torch.set_num_threads(2)
        fn = torch_loss(name)
        if impl == "compile":
            fn = torch.compile(fn)
        z, y = torch.from_numpy(z0), torch.from_numpy(y0)

        def step():
            x = z.clone().requires_grad_(True)
            fn(x, y).backward()
    median, best, _ = time_reps(step, 7)  # common.py: 3 warm-up calls, then 7 timed
    print(json.dumps({"loss": name, "impl": impl, "shape": list(shape), "median_ms": median, "best_ms": best}))


if __name__ == "__main__":
    check() if sys.argv[1:] == ["--check"] else main()
