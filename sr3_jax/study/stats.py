"""The statistics of a 2AFC study, in float64 numpy: Wilson intervals, Bradley–Terry strengths,
Krippendorff's alpha and bootstrap intervals."""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
  """Wilson's score interval for a proportion k/n (95% by default); (nan, nan) when n = 0."""
  if n == 0:
    return (math.nan, math.nan)
  p = k / n
  denom = 1.0 + z * z / n
  centre = (p + z * z / (2 * n)) / denom
  half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
  return (max(0.0, centre - half), min(1.0, centre + half))


def win_matrix(n_items: int, pairs: Sequence[tuple[int, int]]) -> np.ndarray:
  """W[i, j]: how often item i was chosen over item j, from (winner, loser) pairs."""
  w = np.zeros((n_items, n_items), np.float64)
  for a, b in pairs:
    w[a, b] += 1
  return w


def strongly_connected(wins: np.ndarray) -> bool:
  """Whether every item beat, directly or through others, every other item: the condition under
  which the Bradley–Terry maximum-likelihood estimate exists (Zermelo; Ford 1957)."""
  n = len(wins)
  beat = wins > 0
  for start in range(n):
    seen, todo = {start}, [start]
    while todo:
      i = todo.pop()
      for j in np.nonzero(beat[i])[0]:
        if j not in seen:
          seen.add(int(j))
          todo.append(int(j))
    if len(seen) < n:
      return False
  return True


def bradley_terry(
  n_items: int, pairs: Sequence[tuple[int, int]], alpha: float = 0.0, tol: float = 1e-10
) -> np.ndarray:
  """Bradley–Terry log-strengths θ (mean zero) from (winner, loser) pairs: P(i beats j) =
  σ(θ_i − θ_j). alpha = 0 gives the maximum-likelihood estimate (it exists only when the
  comparisons are strongly connected); alpha > 0 the maximum a-posteriori one under a Gaussian
  prior of variance 1/alpha. Newton's method with step halving on the concave log-likelihood."""
  wins = win_matrix(n_items, pairs)
  if alpha <= 0 and not strongly_connected(wins):
    raise ValueError(
      "the Bradley–Terry maximum-likelihood estimate does not exist: some method never won (or "
      "never lost) against the rest; fit with a prior (alpha > 0) or collect more answers"
    )
  games = wins + wins.T

  def loglik(theta):
    d = theta[:, None] - theta[None, :]
    return float(np.sum(wins * -np.logaddexp(0.0, -d)) - 0.5 * alpha * theta @ theta)

  theta = np.zeros(n_items)
  ones = np.ones((n_items, n_items)) / n_items
  for _ in range(200):
    d = theta[:, None] - theta[None, :]
    p = 1.0 / (1.0 + np.exp(-d))  # P(i beats j)
    grad = wins.sum(1) - (games * p).sum(1) - alpha * theta
    curv = games * p * p.T  # −∂²/∂θ_i∂θ_j off the diagonal, sign flipped
    hess = np.diag(curv.sum(1) + alpha) - curv  # the negative Hessian
    if alpha <= 0:  # shift invariance: fix the mean at zero
      hess = hess + ones
    step = np.linalg.solve(hess, grad)
    base, t = loglik(theta), 1.0
    while loglik(theta + t * step) < base - 1e-12 and t > 1e-6:
      t /= 2
    theta = theta + t * step
    if alpha <= 0:
      theta = theta - theta.mean()
    if np.max(np.abs(t * step)) < tol:
      break
  return theta


def krippendorff_alpha_nominal(units: Sequence[Sequence]) -> float:
  """Krippendorff's alpha for nominal values: `units` lists, per rated unit, the values its raters
  gave (any hashable; units with fewer than two values are not pairable and drop out)."""
  codes: dict = {}
  rows = [[codes.setdefault(v, len(codes)) for v in u] for u in units if len(u) >= 2]
  if not rows:
    return math.nan
  k = len(codes)
  o = np.zeros((k, k), np.float64)  # the coincidence matrix
  for r in rows:
    counts = np.bincount(r, minlength=k).astype(np.float64)
    o += (np.outer(counts, counts) - np.diag(counts)) / (len(r) - 1)
  n_c = o.sum(1)
  n = n_c.sum()
  disagree_obs = o.sum() - np.trace(o)
  disagree_exp = (n_c.sum() ** 2 - (n_c**2).sum()) / (n - 1)
  if disagree_exp == 0:
    return math.nan  # one value only: agreement is undefined
  return float(1.0 - disagree_obs / disagree_exp)


def percentile_interval(samples: np.ndarray, level: float = 0.95) -> tuple:
  """The central `level` percentile interval along axis 0 (NaN samples ignored)."""
  lo, hi = (1 - level) / 2 * 100, (1 + level) / 2 * 100
  return np.nanpercentile(samples, lo, axis=0), np.nanpercentile(samples, hi, axis=0)


def bootstrap(
  groups: Sequence, statistic: Callable[[list], np.ndarray | float], n: int = 1000, seed: int = 0
) -> np.ndarray:
  """`statistic` on `n` resamples of `groups` drawn with replacement (a cluster bootstrap: a group
  is a rater or an image with all its answers); a resample where the statistic raises ValueError
  gives NaN."""
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(n):
    pick = rng.integers(0, len(groups), len(groups))
    try:
      out.append(np.asarray(statistic([groups[i] for i in pick]), np.float64))
    except ValueError:
      out.append(None)
  shape = next((o.shape for o in out if o is not None), ())
  return np.stack([np.full(shape, np.nan) if o is None else o for o in out])
