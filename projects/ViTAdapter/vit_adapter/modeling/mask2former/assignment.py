"""Minimum-cost one-to-one assignment (the linear sum assignment problem).

``scipy.optimize.linear_sum_assignment`` when SciPy is installed; otherwise
:func:`shortest_augmenting_path`, the O(n^2 m) Hungarian algorithm with
potentials (same optimum; ties may be broken differently)."""
from typing import Tuple

import numpy as np

try:  # SciPy is optional: the project's required packages do not include it
    from scipy.optimize import linear_sum_assignment as _scipy_lsa
except ImportError:  # pragma: no cover - depends on the environment
    _scipy_lsa = None

__all__ = ["linear_sum_assignment", "shortest_augmenting_path"]


def shortest_augmenting_path(cost: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Hungarian algorithm (row potentials u, column potentials v, one
    Dijkstra-like augmenting path per row).

    Args:
        cost: (R, C) finite float matrix.

    Returns:
        (rows, cols): int64 arrays of length min(R, C), rows ascending,
        ``cost[rows, cols].sum()`` minimal over all one-to-one assignments.
    """
    cost = np.asarray(cost, dtype=np.float64)
    if cost.ndim != 2:
        raise ValueError(f"linear_sum_assignment: cost must be 2-D, got shape {cost.shape}")
    transposed = cost.shape[0] > cost.shape[1]
    if transposed:
        cost = cost.T
    n, m = cost.shape
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    u = np.zeros(n + 1)
    v = np.zeros(m + 1)
    row_of_col = np.zeros(m + 1, dtype=np.int64)  # 1-based row matched to column j; 0 = free
    way = np.zeros(m + 1, dtype=np.int64)
    for i in range(1, n + 1):
        row_of_col[0] = i
        j0 = 0
        minv = np.full(m + 1, np.inf)
        used = np.zeros(m + 1, dtype=bool)
        while True:
            used[j0] = True
            i0 = row_of_col[j0]
            free = ~used[1:]
            reduced = cost[i0 - 1] - u[i0] - v[1:]
            better = free & (reduced < minv[1:])
            minv[1:][better] = reduced[better]
            way[1:][better] = j0
            candidates = np.where(free, minv[1:], np.inf)
            j1 = int(np.argmin(candidates)) + 1
            delta = candidates[j1 - 1]
            u[row_of_col[used]] += delta
            v[used] -= delta
            minv[1:][free] -= delta
            j0 = j1
            if row_of_col[j0] == 0:
                break
        while j0:
            j1 = way[j0]
            row_of_col[j0] = row_of_col[j1]
            j0 = j1
    cols = np.nonzero(row_of_col[1:])[0]
    rows = row_of_col[1:][cols] - 1
    if transposed:
        rows, cols = cols, rows
    order = np.argsort(rows)
    return rows[order].astype(np.int64), cols[order].astype(np.int64)


def linear_sum_assignment(cost: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """SciPy's ``linear_sum_assignment`` if installed, else :func:`shortest_augmenting_path`."""
    if _scipy_lsa is not None:
        rows, cols = _scipy_lsa(cost)
        return rows.astype(np.int64), cols.astype(np.int64)
    return shortest_augmenting_path(cost)
