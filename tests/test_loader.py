"""The Grain loader: determinism, exact resume, disjoint per-process shards, TFDS sources."""

import jax
import numpy as np
import pytest

from sr3_jax import configs, sharding
from sr3_jax.data import embedded, loader


def data_cfg(**kw):
  d = configs.base_config().data
  d.update(dict(dataset="embedded", image_size=32, factor=4, num_threads=1, prefetch=2))
  d.update(kw)
  return d


def take(it, n):
  return [next(it)["hr"] for _ in range(n)]


def test_batches_are_deterministic_per_seed():
  a = take(iter(loader.make_dataset(data_cfg(), "train", 4, seed=1)), 3)
  b = take(iter(loader.make_dataset(data_cfg(), "train", 4, seed=1)), 3)
  c = take(iter(loader.make_dataset(data_cfg(), "train", 4, seed=2)), 3)
  assert a[0].shape == (4, 32, 32, 3) and a[0].dtype == np.float32
  assert a[0].min() >= -1.0 and a[0].max() <= 1.0
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)
  assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_resume_from_saved_state_yields_the_next_batches():
  it = iter(loader.make_dataset(data_cfg(), "train", 4, seed=0))
  take(it, 5)  # more than one epoch of the 13 training photographs
  state = it.get_state()
  expected = take(it, 4)
  resumed = iter(loader.make_dataset(data_cfg(), "train", 4, seed=0))
  resumed.set_state(state)
  for x, y in zip(expected, take(resumed, 4)):
    np.testing.assert_array_equal(x, y)


class NumberedSource:
  """Image i is filled with the value i, so a batch tells which records it holds."""

  def __init__(self, n):
    self.n = n

  def __len__(self):
    return self.n

  def __getitem__(self, i):
    return np.full((8, 8, 3), i, np.uint8)


def records(batches):
  return [int(round((x[0, 0, 0] + 1.0) * 127.5)) for b in batches for x in b["hr"]]


def test_processes_read_disjoint_shares_that_cover_the_split(monkeypatch):
  monkeypatch.setattr(loader, "make_source", lambda dcfg, split: NumberedSource(23))
  shares = [
    records(
      loader.make_dataset(
        data_cfg(image_size=8), "test", 2, seed=0, train=False, process_index=i, process_count=2
      )
    )
    for i in range(2)
  ]
  assert not set(shares[0]) & set(shares[1])
  assert sorted(shares[0] + shares[1]) == list(range(23))
  # Training streams are disjoint too, epoch after epoch.
  streams = [
    records([next(it) for _ in range(6)])
    for it in (
      iter(
        loader.make_dataset(
          data_cfg(image_size=8), "train", 2, seed=0, process_index=i, process_count=2
        )
      )
      for i in range(2)
    )
  ]
  assert not set(streams[0][:11]) & set(streams[1][:11])


def test_held_out_photographs_never_reach_training():
  src = loader.EmbeddedSource("train")
  assert not set(src.names) & set(embedded.HELD_OUT)
  held = [embedded.load_photo(n) for n in embedded.HELD_OUT]
  for img in src.images:
    assert not any(img.shape == h.shape and np.array_equal(img, h) for h in held)


def test_small_gray_and_16bit_images_are_handled(monkeypatch):
  class Mixed:
    imgs = [
      np.zeros((40, 40), np.uint8),
      np.zeros((40, 40, 4), np.uint8),
      np.full((40, 40, 3), 65535, np.uint16),
      np.zeros((10, 10, 3), np.uint8),
    ]

    def __len__(self):
      return len(self.imgs)

    def __getitem__(self, i):
      return self.imgs[i]

  monkeypatch.setattr(loader, "make_source", lambda dcfg, split: Mixed())
  out = list(loader.make_dataset(data_cfg(), "test", 1, seed=0, train=False))
  assert len(out) == 3  # the 10×10 image is below the target size and dropped (SR3's recipe)
  assert all(b["hr"].shape == (1, 32, 32, 3) for b in out)
  assert out[2]["hr"].max() == pytest.approx(1.0)


def test_center_resize_is_area_resampling_of_the_central_square():
  img = np.arange(6 * 8 * 3, dtype=np.uint8).reshape(6, 8, 3)
  out = loader.center_resize(img, 3)
  want = img[:, 1:7].reshape(3, 2, 3, 2, 3).astype(np.float64).mean(axis=(1, 3))
  np.testing.assert_allclose(out, np.round(want), atol=1)


def test_tfds_source_under_mock_data():
  tfds = pytest.importorskip("tensorflow_datasets")
  with tfds.testing.mock_data(num_examples=6):
    d = data_cfg(dataset="div2k/bicubic_x4", image_key="hr", image_size=8)
    batches = take(iter(loader.make_dataset(d, "train", 2, seed=0)), 2)
    assert batches[0].shape == (2, 8, 8, 3)
    with pytest.raises(KeyError, match="data.image_key"):
      take(
        iter(
          loader.make_dataset(
            data_cfg(dataset="div2k/bicubic_x4", image_key="image", image_size=8),
            "train",
            2,
            seed=0,
          )
        ),
        1,
      )


def test_unprepared_tfds_dataset_names_the_fix(tmp_path):
  with pytest.raises(FileNotFoundError, match="sr3 prepare"):
    loader.make_dataset(
      data_cfg(dataset="no_such_dataset_xyz", data_dir=str(tmp_path)), "train", 2, seed=0
    )


def test_global_batch_on_the_mesh():
  c = configs.load("experiments/configs/demo.py:runlocal")
  mesh = sharding.make_mesh(c)
  local = next(iter(loader.make_dataset(c.data, "train", 4, seed=0)))
  g = loader.global_batch(local, sharding.batch_sharding(mesh))
  assert g["hr"].shape == (4 * jax.process_count(), 32, 32, 3)
  np.testing.assert_array_equal(np.asarray(g["hr"]), local["hr"])


def test_lfw_faces_split_and_worker_processes():
  train_faces = loader.EmbeddedSource("train", "lfw_faces")
  test_faces = loader.EmbeddedSource("test", "lfw_faces")
  assert (len(train_faces), len(test_faces)) == (90, 10)
  assert not set(train_faces.names) & set(test_faces.names)
  # With worker processes Grain interleaves the workers' shares: still deterministic, and resumable.
  d = data_cfg(dataset="lfw_faces", image_size=16, num_workers=2)
  it = iter(loader.make_dataset(d, "train", 4, seed=3))
  a = take(it, 3)
  state = it.get_state()
  after = take(it, 2)
  again = iter(loader.make_dataset(d, "train", 4, seed=3))
  for x, y in zip(a, take(again, 3)):
    np.testing.assert_array_equal(x, y)
  resumed = iter(loader.make_dataset(d, "train", 4, seed=3))
  resumed.set_state(state)
  for x, y in zip(after, take(resumed, 2)):
    np.testing.assert_array_equal(x, y)
  assert a[0].shape == (4, 16, 16, 3) and np.allclose(a[0][..., 0], a[0][..., 2])
