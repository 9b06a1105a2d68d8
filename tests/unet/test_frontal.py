"""The batched multifrontal factor of a grid matrix solves what a general sparse solver solves."""

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spl

from unet import guide
from unet.frontal import FrontalFactor, plan
from unet.hints import parse_hints


def grid_matrix(h, w, wt, diag):
    p = plan(h, w)
    n = h * w
    rows = np.concatenate([p.a, p.b, np.arange(n)])
    cols = np.concatenate([p.b, p.a, np.arange(n)])
    return sp.csc_matrix((np.concatenate([-wt, -wt, diag]), (rows, cols)), shape=(n, n))


@pytest.mark.parametrize("h,w", [(1, 1), (1, 7), (5, 3), (8, 8), (13, 9), (40, 33), (64, 96)])
def test_it_solves_a_grid_laplacian_with_strong_contrasts(h, w):
    rng = np.random.default_rng(h * 100 + w)
    p = plan(h, w)
    wt = rng.random(len(p.a)) ** 8                  # many near-zero affinities, as across edges
    diag = np.bincount(p.a, wt, p.n) + np.bincount(p.b, wt, p.n) + guide.PULL
    diag[rng.integers(0, p.n, 3)] += guide.WEIGHT
    b = rng.standard_normal((p.n, 2))
    want = spl.spsolve(grid_matrix(h, w, wt, diag), b)
    f = FrontalFactor(p, np.concatenate([-wt, -wt, diag]))
    assert np.abs(f.solve(b) - want).max() <= 1e-4 * np.abs(want).max()
    assert np.abs(f.solve(b[:, 0]) - want[:, 0]).max() <= 1e-4 * np.abs(want).max()


def test_the_guide_solve_is_the_sparse_solve_on_a_gray_with_an_edge():
    h, w = 48, 36
    gray = np.full((h, w), 0.8)
    gray[:, w // 2:] = 0.2
    g = guide.Guide.build(gray, np.zeros((2, h // 2, w // 2)))
    hints = parse_hints({"points": [{"x": 0.2, "y": 0.5, "color": "#98c0ff"}]})
    pix, weight, delta = g.constraints(hints)
    diag = g.degree + guide.PULL
    diag[pix] += weight
    rhs = np.zeros((h * w, 2))
    rhs[pix] = weight[:, None] * delta
    want = spl.spsolve(grid_matrix(h, w, g.weights.astype(np.float64), diag), rhs).T.reshape(2, h, w)
    got = g.solve(hints) - g.prior
    assert np.abs(got - want).max() < 1e-5
    # The point's color spreads on its side of the edge and stops there.
    assert np.abs(got[:, :, w // 2:]).max() < 1e-3 * np.abs(got[:, :, : w // 2]).max()
