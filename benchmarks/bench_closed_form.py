"""Closed-form batched score + Hessian against per-point autograd Hessians.

N = 2000 points, K = 8 full-covariance components, d = 32 (defaults). Prints both wall times,
their ratio (target: closed form >= 50x faster) and the largest disagreement.
"""

from __future__ import annotations

import argparse
import time

import torch

from memgeo.gmm import GaussianMixture


def make_mixture(K: int, d: int, seed: int = 0) -> GaussianMixture:
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(K, d, d, generator=g, dtype=torch.float64)
    cov = A @ A.transpose(-1, -2) / d + 0.2 * torch.eye(d, dtype=torch.float64)
    return GaussianMixture(torch.full((K,), 1.0 / K), 2 * torch.randn(K, d, generator=g, dtype=torch.float64), cov)


#: The smallest setting, run by the test suite ('{tmp}' is a scratch folder); None where it takes over 30 s.
SMOKE = ["--n", "20", "--k", "2", "--d", "4"]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--d", type=int, default=32)
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    m = make_mixture(args.k, args.d)
    x = m.sample(args.n, generator=torch.Generator().manual_seed(1))

    m.score_and_hessian(x[:10])  # warm-up
    t0 = time.perf_counter()
    s, H = m.score_and_hessian(x)
    t_closed = time.perf_counter() - t0

    t0 = time.perf_counter()
    s_ad, H_ad = [], []
    for xi in x:
        xr = xi.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(m.log_prob(xr), xr)
        s_ad.append(g)
        H_ad.append(torch.autograd.functional.hessian(m.log_prob, xi))
    t_ad = time.perf_counter() - t0
    s_ad, H_ad = torch.stack(s_ad), torch.stack(H_ad)

    err = max(float((s - s_ad).abs().max()), float((H - H_ad).abs().max()))
    print(f"closed-form score + Hessian vs per-point autograd (N={args.n}, K={args.k}, d={args.d}, float64, "
          f"{torch.get_num_threads()} threads)")
    print(f"  closed form, batched      : {t_closed * 1e3:10.1f} ms")
    print(f"  autograd, per point       : {t_ad * 1e3:10.1f} ms")
    print(f"  speed ratio               : {t_ad / t_closed:10.1f} x   (target >= 50 x)")
    print(f"  max |difference|          : {err:10.2e}")


if __name__ == "__main__":
    main()
