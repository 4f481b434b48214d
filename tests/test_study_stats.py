"""The study's statistics against independent references: scipy's Wilson interval, the choix
package's Bradley–Terry fits, the krippendorff package, and closed forms."""

import math

import choix
import numpy as np
import pytest
from scipy import stats as sps

from sr3_jax.study import stats


@pytest.mark.parametrize("k,n", [(0, 10), (3, 10), (10, 10), (27, 60), (499, 1000), (1, 1)])
def test_wilson_matches_scipy(k, n):
  ci = sps.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
  np.testing.assert_allclose(stats.wilson(k, n), (ci.low, ci.high), atol=1e-12)
  assert all(math.isnan(v) for v in stats.wilson(0, 0))


def _comparisons(theta, n, rng):
  pairs = []
  for _ in range(n):
    i, j = rng.choice(len(theta), 2, replace=False)
    p = 1 / (1 + np.exp(-(theta[i] - theta[j])))
    pairs.append((i, j) if rng.random() < p else (j, i))
  return pairs


def test_bradley_terry_two_items_closed_form():
  # Two items: the MLE difference is the log of the win ratio.
  pairs = [(0, 1)] * 7 + [(1, 0)] * 3
  th = stats.bradley_terry(2, pairs)
  assert th[0] - th[1] == pytest.approx(math.log(7 / 3), abs=1e-10)
  assert th.sum() == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("alpha", [0.0, 0.5])
def test_bradley_terry_matches_choix(alpha):
  rng = np.random.default_rng(1)
  theta = np.array([0.0, -0.3, -1.2, 0.8, 0.1])
  pairs = _comparisons(theta, 400, rng)
  ours = stats.bradley_terry(5, pairs, alpha=alpha)
  # choix penalises alpha·Σθ², a Gaussian prior of variance 1/(2·alpha): its alpha is half ours
  ref = choix.opt_pairwise(5, pairs, alpha=alpha / 2 if alpha else 1e-12, tol=1e-12)
  np.testing.assert_allclose(ours, ref - ref.mean(), atol=2e-5)
  # and the fit moves towards the truth (400 comparisons of 5 items)
  if alpha == 0:
    np.testing.assert_allclose(ours, theta - theta.mean(), atol=0.35)


def test_bradley_terry_needs_connected_comparisons():
  pairs = [(0, 1), (0, 1), (1, 2), (2, 1)]  # item 0 never lost: no MLE
  assert not stats.strongly_connected(stats.win_matrix(3, pairs))
  with pytest.raises(ValueError, match="never won"):
    stats.bradley_terry(3, pairs)
  th = stats.bradley_terry(3, pairs, alpha=0.1)  # a prior makes it finite
  ref = choix.opt_pairwise(3, pairs, alpha=0.05, tol=1e-12)
  np.testing.assert_allclose(th, ref, atol=2e-5)


def test_krippendorff_alpha_matches_package():
  krippendorff = pytest.importorskip("krippendorff")  # Python ≥ 3.11
  rng = np.random.default_rng(2)
  raters, units = 6, 40
  truth = rng.integers(0, 3, units)
  values = np.where(rng.random((raters, units)) < 0.7, truth, rng.integers(0, 3, (raters, units)))
  data = values.astype(float)
  data[rng.random((raters, units)) < 0.4] = np.nan  # each rater saw only some units
  ref = krippendorff.alpha(reliability_data=data, level_of_measurement="nominal")
  per_unit = [[int(v) for v in data[:, u] if not np.isnan(v)] for u in range(units)]
  assert stats.krippendorff_alpha_nominal(per_unit) == pytest.approx(ref, abs=1e-12)


def test_krippendorff_alpha_edges():
  assert stats.krippendorff_alpha_nominal([["a", "a"], ["b", "b", "b"]]) == 1.0
  assert math.isnan(stats.krippendorff_alpha_nominal([["a"], ["b"]]))  # nothing pairable
  assert math.isnan(stats.krippendorff_alpha_nominal([["a", "a"], ["a", "a"]]))  # one value only


def test_bootstrap_marks_failed_resamples():
  def mean_or_fail(groups):
    if len(set(groups)) == 1:
      raise ValueError("one group")
    return np.mean(groups)

  out = stats.bootstrap([1.0, 2.0], mean_or_fail, n=200, seed=0)
  assert out.shape == (200,)
  failed = np.isnan(out).sum()
  assert 50 < failed < 150  # P(both draws equal) = 1/2
  lo, hi = stats.percentile_interval(out)
  assert 1.0 <= lo <= hi <= 2.0
