"""A grid matrix's Cholesky factor by nested dissection, one batch of dense fronts per level.

The grid is halved by a row or a column of pixels, and the halves again,
down to blocks of at most LEAF pixels (George 1973). The pixels of one
dividing line (or of one leaf block) are eliminated together in a dense
front: that line and the ring of pixels around its block, the only ones it
touches that are eliminated later. All blocks of one depth are alike in
size, so their fronts go through Cholesky, the triangular solve and the
update as one batch (padded to the level's largest, the padding an identity),
and a block's update is added into its parent's front through one index
list: the multifrontal method with the loops over fronts turned into batched
dense algebra (torch). Single precision, as the SuperLU factor it replaced.

plan(h, w) holds what depends on the grid alone (cached per size);
FrontalFactor fills it with one matrix's values.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

LEAF = 32   # pixels of a block eliminated whole (16-48 timed alike, within the noise)


@dataclass
class Level:
    """The fronts of one depth: B blocks, s pixels eliminated in each, r ring pixels after them."""

    sep_get: torch.Tensor     # (B, s) the pixels eliminated, padding -> the zero slot
    sep_put: torch.Tensor     # (B, s) the same, padding -> the trash slot
    ring_get: torch.Tensor    # (B, r) the ring, padding -> the zero slot
    ring_put: torch.Tensor    # (B, r) the ring, padding -> the trash slot
    src: torch.Tensor         # indices into the matrix values ...
    dst: torch.Tensor         # ... and where they go in the flat (B, s + r, s + r) fronts
    pad: torch.Tensor         # flat places of the padding's diagonal (set to 1)
    lift: torch.Tensor | None  # where the children's updates go in the flat fronts (padding -> one past)


def _index(a: np.ndarray) -> torch.Tensor:
    """The factor's index lists as int32: half a plan's memory (some 16 MB at 192x128), no slower there."""
    return torch.from_numpy(a.astype(np.int32))


def _blocks(h: int, w: int) -> tuple[list[list[tuple]], np.ndarray]:
    """Blocks (r0, r1, c0, c1, sep pixels, parent index) per depth, and the elimination order."""
    depth = 0
    big = [(h, w)]
    while max(r * c for r, c in big) > LEAF:
        big = [p for r, c in big for p in (((r // 2, c), (r - r // 2 - 1, c)) if r >= c
                                          else ((r, c // 2), (r, c - c // 2 - 1)))]
        depth += 1
    idx = np.arange(h * w).reshape(h, w)
    levels: list[list[tuple]] = [[] for _ in range(depth + 1)]
    order: list[np.ndarray] = []

    def part(r0, r1, c0, c1, d, parent):
        if r1 <= r0 or c1 <= c0:
            return
        me = len(levels[d])
        levels[d].append(None)
        if d == depth:
            sep = idx[r0:r1, c0:c1].ravel()
        elif r1 - r0 >= c1 - c0:
            m = r0 + (r1 - r0) // 2
            part(r0, m, c0, c1, d + 1, me)
            part(m + 1, r1, c0, c1, d + 1, me)
            sep = idx[m, c0:c1]
        else:
            m = c0 + (c1 - c0) // 2
            part(r0, r1, c0, m, d + 1, me)
            part(r0, r1, m + 1, c1, d + 1, me)
            sep = idx[r0:r1, m]
        levels[d][me] = (r0, r1, c0, c1, sep, parent)
        order.append(sep)

    part(0, h, 0, w, 0, -1)
    return levels, np.concatenate(order)


def _ring(h: int, w: int, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
    """The pixels around a block (its 8 neighbours outside it), all on the lines of its ancestors."""
    rr, cc = np.meshgrid(np.arange(max(r0 - 1, 0), min(r1 + 1, h)), np.arange(max(c0 - 1, 0), min(c1 + 1, w)),
                         indexing="ij")
    return (rr * w + cc)[(rr < r0) | (rr >= r1) | (cc < c0) | (cc >= c1)]


def edges(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """The 8-neighbour edges of an h x w grid as two arrays of pixels: across, down, down-right, down-left."""
    idx = np.arange(h * w).reshape(h, w)
    pairs = [(idx[:, :-1], idx[:, 1:]), (idx[:-1], idx[1:]), (idx[:-1, :-1], idx[1:, 1:]), (idx[:-1, 1:], idx[1:, :-1])]
    return np.concatenate([p.ravel() for p, _ in pairs]), np.concatenate([q.ravel() for _, q in pairs])


@functools.lru_cache(maxsize=8)
def plan(h: int, w: int) -> "Plan":
    """The Plan of an h x w grid (some 0.1 s to make at 192x128, once per working size)."""
    return Plan(h, w)


class Plan:
    """The fronts of an h x w grid's 8-neighbour matrix, whose values come as [-w (a, b), -w (b, a), diagonal]."""

    def __init__(self, h: int, w: int):
        self.a, self.b = edges(h, w)
        self.n = n = h * w
        self.trash, self.zero = n, n + 1     # two slots past the pixels: one written to, one always 0
        blocks, order = _blocks(h, w)
        rank = np.empty(n, dtype=np.int64)
        rank[order] = np.arange(n)
        rows = np.concatenate([self.a, self.b, np.arange(n)])
        cols = np.concatenate([self.b, self.a, np.arange(n)])
        # A value belongs to the front that eliminates the earlier of its row and column.
        first = np.where(rank[rows] <= rank[cols], rows, cols)
        owner = np.empty(n, dtype=np.int64)    # depth * n + block of the front that eliminates each pixel
        rings = [[_ring(h, w, *blk[:4]) for blk in level] for level in blocks]
        for d, level in enumerate(blocks):
            for i, blk in enumerate(level):
                owner[blk[4]] = d * n + i
        self.levels = []
        for d, level in enumerate(blocks):
            mine = np.flatnonzero(owner[first] // n == d)
            below = (blocks[d + 1], rings[d + 1]) if d + 1 < len(blocks) else None
            self.levels.append(self._level(level, rings[d], mine, owner[first[mine]] % n, rows, cols, below))

    def _level(self, level, rings, mine, blk_of, rows, cols, below) -> Level:
        n, B = self.n, len(level)
        s, r = max(len(blk[4]) for blk in level), max(len(x) for x in rings)
        F = s + r
        sep, ring = np.full((B, s), -1), np.full((B, r), -1)
        keys, pos = [], []
        for i, blk in enumerate(level):
            sep[i, :len(blk[4])] = blk[4]
            ring[i, :len(rings[i])] = rings[i]
            keys += [i * n + blk[4], i * n + rings[i]]
            pos += [np.arange(len(blk[4])), s + np.arange(len(rings[i]))]
        keys, pos = np.concatenate(keys), np.concatenate(pos)
        sort = np.argsort(keys)
        keys, pos = keys[sort], pos[sort]

        def local(blks: np.ndarray, pixels: np.ndarray) -> np.ndarray:
            """Where pixels are in their blocks' fronts."""
            return pos[np.searchsorted(keys, blks * n + pixels)]

        dst = blk_of * F * F + local(blk_of, rows[mine]) * F + local(blk_of, cols[mine])
        padded = np.argwhere(sep < 0)
        lift = None
        if below is not None:   # where each entry of the children's updates lands in these fronts
            kids, kid_rings = below
            rc = max(len(x) for x in kid_rings)
            lift = np.full((len(kids), rc, rc), B * F * F)
            for j, blk in enumerate(kids):
                p = local(np.full(len(kid_rings[j]), blk[5]), kid_rings[j])
                lift[j, :len(p), :len(p)] = blk[5] * F * F + p[:, None] * F + p[None, :]
            lift = _index(lift.ravel())
        t = torch.from_numpy   # the solve's (small) lists stay int64: int32 made each solve 1.5x slower
        return Level(t(np.where(sep < 0, self.zero, sep)), t(np.where(sep < 0, self.trash, sep)),
                     t(np.where(ring < 0, self.zero, ring)), t(np.where(ring < 0, self.trash, ring)),
                     _index(mine), _index(dst), _index(padded[:, 0] * F * F + padded[:, 1] * (F + 1)), lift)


class FrontalFactor:
    """The Cholesky factor of an SPD grid matrix given by its values on Plan's pattern (float32)."""

    def __init__(self, plan: Plan, values: np.ndarray):
        self.plan = plan
        vals = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))
        self.parts = []
        below = None
        for lv in reversed(plan.levels):
            B, s = lv.sep_get.shape
            r = lv.ring_get.shape[1]
            F = s + r
            front = torch.zeros(B * F * F + 1)
            front[lv.dst] = vals[lv.src]
            front[lv.pad] = 1.0
            if below is not None:
                front.index_add_(0, lv.lift, below.reshape(-1))
            front = front[:-1].view(B, F, F)
            L = torch.linalg.cholesky(front[:, :s, :s])
            # One triangular solve gives L^-1 A_sr and L^-1 itself, so that solves are products alone.
            rhs = torch.cat([torch.eye(s).expand(B, s, s), front[:, :s, s:]], dim=2)
            W = torch.linalg.solve_triangular(L, rhs, upper=False)
            inv, X = W[:, :, :s].contiguous(), W[:, :, s:].contiguous()   # products of views are slow
            below = torch.baddbmm(front[:, s:, s:], X.mT, X, alpha=-1.0)
            self.parts.append((lv, inv, X))

    def solve(self, b: np.ndarray) -> np.ndarray:
        """(n,) or (n, k) -> the solution, float64."""
        k = 1 if b.ndim == 1 else b.shape[1]
        z = torch.zeros(self.plan.n + 2, k)
        z[:self.plan.n] = torch.from_numpy(np.asarray(b, dtype=np.float32).reshape(-1, k))
        for lv, inv, X in self.parts:
            y = inv @ z[lv.sep_get]
            z[lv.sep_put.reshape(-1)] = y.reshape(-1, k)
            z.index_add_(0, lv.ring_put.reshape(-1), -(X.mT @ y).reshape(-1, k))
        for lv, inv, X in reversed(self.parts):
            y = z[lv.sep_get] - X @ z[lv.ring_get]
            z[lv.sep_put.reshape(-1)] = (inv.mT @ y).reshape(-1, k)
        x = z[:self.plan.n].double().numpy()
        return x if b.ndim > 1 else x[:, 0]
