"""Reference trajectories for langevin's RMSprop and Adagrad
(crates/langevin/tests/optim_reference.rs).

PyTorch is not installed where these were made, so this script follows the
algorithms as documented for ``torch.optim.RMSprop`` and
``torch.optim.Adagrad`` (https://pytorch.org/docs/stable/generated/
torch.optim.RMSprop.html and .../torch.optim.Adagrad.html), in the order of
operations of torch's single-tensor implementation (eps added after the
square root; centred RMSprop's gradient average updated by ``lerp``), in
plain Python floats (IEEE double, as torch with float64 tensors):

RMSprop:  g <- g + wd*x
          v <- alpha*v + (1-alpha)*g^2
          centred: u <- u + (1-alpha)*(g-u);  a = sqrt(v - u^2) + eps
          else:    a = sqrt(v) + eps
          momentum > 0: b <- mu*b + g/a;  x <- x - lr*b
          else:         x <- x - lr*g/a
Adagrad:  clr = lr / (1 + (t-1)*lr_decay)
          g <- g + wd*x
          s <- s + g^2          (s starts at initial_accumulator_value)
          x <- x - clr * g/(sqrt(s) + eps)

Objective: f(x) = 1.5 x0^2 + 0.5 x1^2 + x0 x1 from x = (1, -2).
Usage: python3 bench/reference/optim_reference.py   (prints Rust constants)
With torch installed, ``--torch`` also runs torch.optim in float64 and
prints the largest difference to the values above.
"""
import math
import sys


def grad(x):
    return [3.0 * x[0] + x[1], x[1] + x[0]]


def rmsprop(lr=1e-2, alpha=0.99, eps=1e-8, momentum=0.0, centered=False, wd=0.0, steps=5):
    x = [1.0, -2.0]
    v = [0.0, 0.0]
    u = [0.0, 0.0]
    b = [0.0, 0.0]
    out = []
    for _ in range(steps):
        g = grad(x)
        for i in range(2):
            gi = g[i] + wd * x[i]
            v[i] = alpha * v[i] + (1 - alpha) * gi * gi
            if centered:
                u[i] = u[i] + (1 - alpha) * (gi - u[i])
                a = math.sqrt(max(v[i] - u[i] * u[i], 0.0)) + eps
            else:
                a = math.sqrt(v[i]) + eps
            if momentum > 0:
                b[i] = momentum * b[i] + gi / a
                x[i] = x[i] - lr * b[i]
            else:
                x[i] = x[i] - lr * (gi / a)
        out.append(list(x))
    return out


def adagrad(lr=1e-2, lr_decay=0.0, eps=1e-10, init=0.0, wd=0.0, steps=5):
    x = [1.0, -2.0]
    s = [init, init]
    out = []
    for t in range(1, steps + 1):
        g = grad(x)
        clr = lr / (1 + (t - 1) * lr_decay)
        for i in range(2):
            gi = g[i] + wd * x[i]
            s[i] = s[i] + gi * gi
            x[i] = x[i] - clr * (gi / (math.sqrt(s[i]) + eps))
        out.append(list(x))
    return out


CASES = {
    "RMSPROP_DEFAULT": (rmsprop, {}),
    "RMSPROP_CENTRED_MOMENTUM": (
        rmsprop,
        dict(lr=0.05, alpha=0.9, eps=1e-6, momentum=0.5, centered=True, wd=0.1),
    ),
    "ADAGRAD_DEFAULT": (adagrad, {}),
    "ADAGRAD_DECAY": (adagrad, dict(lr=0.5, lr_decay=0.3, eps=1e-6, init=0.2, wd=0.1)),
}


def torch_check():
    import torch

    opts = {
        "RMSPROP_DEFAULT": lambda p: torch.optim.RMSprop(p),
        "RMSPROP_CENTRED_MOMENTUM": lambda p: torch.optim.RMSprop(
            p, lr=0.05, alpha=0.9, eps=1e-6, momentum=0.5, centered=True, weight_decay=0.1
        ),
        "ADAGRAD_DEFAULT": lambda p: torch.optim.Adagrad(p),
        "ADAGRAD_DECAY": lambda p: torch.optim.Adagrad(
            p, lr=0.5, lr_decay=0.3, eps=1e-6, initial_accumulator_value=0.2, weight_decay=0.1
        ),
    }
    for name, (fn, kw) in CASES.items():
        x = torch.tensor([1.0, -2.0], dtype=torch.float64, requires_grad=True)
        opt = opts[name]([x])
        worst = 0.0
        for want in fn(**kw):
            opt.zero_grad()
            f = 1.5 * x[0] ** 2 + 0.5 * x[1] ** 2 + x[0] * x[1]
            f.backward()
            opt.step()
            worst = max(worst, max(abs(a - b) for a, b in zip(x.tolist(), want)))
        print(f"{name}: largest |torch - reference| = {worst:.3e}")


if __name__ == "__main__":
    for name, (fn, kw) in CASES.items():
        rows = fn(**kw)
        print(f"const {name}: [[f64; 2]; {len(rows)}] = [")
        for r in rows:
            print(f"    [{r[0]!r}, {r[1]!r}],")
        print("];")
    if "--torch" in sys.argv:
        torch_check()
