"""`sr3 upscale`: super-resolve image files of any size with a trained checkpoint's EMA params.

Each LR image is cut into tiles of at most `tile`×`tile` LR pixels that overlap by `overlap`
pixels (an image that fits is one tile, padded by reflection to a size the U-Net accepts). Every
tile is sampled K times; the tiles of one sample are blended back with linear ramps across the
overlaps, and the padding is cropped off. All (tile, sample) pairs of an image run through one
jitted sampler in fixed-size batches sharded over the local devices, so a folder of same-sized
photos compiles once.

The U-Net is fully convolutional and places attention by level (fixed by the trained
`model.image_size`), so the same parameters apply at any tile size.

Outputs per input `NAME.ext` in the output folder: `NAME.png` for one sample; with K > 1,
`NAME_sample{k}.png`, `NAME_mean.png` (mean of the K samples) and `NAME_std.png`, the per-pixel
standard deviation over the samples as a heat-map — where the LR input leaves detail open.
Grayscale inputs give grayscale outputs; an alpha channel is resized bicubically and kept.
`upscale.json` lists every file with its outputs or its error.
"""

from __future__ import annotations

import json
import math
import pathlib
import sys
import time

import jax
import numpy as np
from tqdm import tqdm

from sr3_jax import configs, images, inference, sharding
from sr3_jax.checkpoint import load_for_inference


def tile_starts(n: int, tile: int, overlap: int) -> list[int]:
  """Start offsets of tiles of length `tile` covering [0, n), consecutive ones overlapping ≥ `overlap`."""
  if n <= tile:
    return [0]
  stride = tile - overlap
  return list(range(0, n - tile, stride)) + [n - tile]


def ramp(n: int, width: int) -> np.ndarray:
  """Blending weights along one tile axis: rising over `width` pixels at both ends, never zero."""
  i = np.arange(n, dtype=np.float64)
  if width <= 0:
    return np.ones(n)
  return np.minimum(1.0, np.minimum(i + 1, n - i) / (width + 1))


def tile_length(n: int, tile: int, overlap: int, multiple: int) -> int:
  """The shortest multiple of `multiple` (≤ `tile`) whose tiles cover n pixels in as few tiles as
  tiles of `tile` would: padding and overlap waste stay small for any n."""
  ceil_m = lambda v: -(-v // multiple) * multiple
  if n <= tile:
    return ceil_m(n)
  k = -(-(n - overlap) // (tile - overlap))  # tiles needed at the full tile length
  return min(tile, ceil_m(-(-(n + (k - 1) * overlap) // k)))


def plan(
  height: int, width: int, tile: int, multiple: int, overlap: int = 0
) -> tuple[int, int, int, int]:
  """(tile_h, tile_w, padded_h, padded_w) in LR pixels: tiles are multiples of `multiple`."""
  th = tile_length(height, tile, overlap, multiple)
  tw = tile_length(width, tile, overlap, multiple)
  return th, tw, max(height, th), max(width, tw)


def split_tiles(
  image: np.ndarray, th: int, tw: int, overlap: int
) -> tuple[np.ndarray, list[tuple[int, int]]]:
  """(H, W, C) → tiles (N, th, tw, C) and their (y, x) offsets."""
  pos = [
    (y, x)
    for y in tile_starts(image.shape[0], th, overlap)
    for x in tile_starts(image.shape[1], tw, overlap)
  ]
  return np.stack([image[y : y + th, x : x + tw] for y, x in pos]), pos


def blend_tiles(
  tiles: np.ndarray, pos: list[tuple[int, int]], height: int, width: int, scale: int, overlap: int
) -> np.ndarray:
  """Tiles (N, th·s, tw·s, C) at LR offsets `pos` → (height·s, width·s, C), overlaps cross-faded."""
  n, h, w, c = tiles.shape
  acc = np.zeros((height * scale, width * scale, c))
  wsum = np.zeros((height * scale, width * scale, 1))
  weight = np.outer(ramp(h, overlap * scale), ramp(w, overlap * scale))[..., None]
  for t, (y, x) in zip(tiles, pos):
    acc[y * scale : y * scale + h, x * scale : x * scale + w] += weight * t
    wsum[y * scale : y * scale + h, x * scale : x * scale + w] += weight
  return acc / wsum


def input_files(path: str) -> list[pathlib.Path]:
  """A file, or every non-hidden file directly inside a folder (sorted)."""
  p = pathlib.Path(path)
  if p.is_file():
    return [p]
  if not p.is_dir():
    raise FileNotFoundError(
      f"--input {path} does not exist; give an image file or a folder of images"
    )
  files = sorted(f for f in p.iterdir() if f.is_file() and not f.name.startswith("."))
  if not files:
    raise FileNotFoundError(f"--input {path} holds no files; put PNG or JPEG images in it")
  return files


def _output_stems(files: list[pathlib.Path]) -> list[str]:
  stems = [f.stem for f in files]
  return [f.name if stems.count(f.stem) > 1 else f.stem for f in files]  # a.jpg and a.png both kept


class Upscaler:
  """A checkpoint's EMA params and one jitted sampler (or a program written by `sr3 export`),
  applied to images tile batch by tile batch."""

  def __init__(
    self,
    checkpoint: str | None,
    steps: int | None = None,
    sampler: str | None = None,
    samples: int = 1,
    batch: int | None = None,
    tile: int | None = None,
    overlap: int = 8,
    seed: int = 0,
    exported: str | None = None,
    overrides: dict | None = None,
  ):
    if int(samples) < 1:
      raise ValueError(f"--samples {samples} must be at least 1")
    self.samples = int(samples)
    self.seed = seed
    self.overlap = int(overlap)
    self.program = None
    if exported:
      if overrides:
        raise ValueError(
          f"--set {next(iter(overrides))}: {exported}'s sampling was fixed when it was exported; "
          "use --checkpoint, or export again with sr3 export"
        )
      self._init_exported(exported, steps, sampler, batch, tile)
      return
    if not checkpoint:
      raise ValueError("give --checkpoint RUN (or --exported FILE from sr3 export)")
    tile = 64 if tile is None else tile
    self.config, model, self.params, self.step = load_for_inference(checkpoint)
    configs.apply_sampling_overrides(self.config, overrides, "upscale")
    if sampler:
      self.config.sampling.sampler = sampler
    self.sampler = self.config.sampling.sampler
    self.factor = int(self.config.data.factor)
    self.steps = steps or self.config.sampling.steps
    down = 2 ** (len(self.config.model.channel_mult) - 1)
    self.multiple = down // math.gcd(
      down, self.factor
    )  # LR multiple whose HR size the U-Net accepts
    self.tile = max(self.multiple, -(-int(tile) // self.multiple) * self.multiple)
    self.fixed_tile = None
    if not 0 <= overlap < self.tile:
      raise ValueError(
        f"--overlap {overlap} must be in [0, tile={self.tile}); lower it or raise --tile"
      )
    mesh = sharding.make_mesh(self.config, jax.local_devices())
    self.sharding = sharding.batch_sharding(mesh)
    ndev = len(jax.local_devices())
    self.batch = -(-max(1, int(batch or 8)) // ndev) * ndev  # a multiple of the local device count
    self.gammas = inference.inference_grid(self.config, self.steps)
    self.sr_fn = inference.make_super_resolve(self.config, model)

  def _init_exported(self, path, steps, sampler, batch, tile) -> None:
    """The sampler of an export: its batch, LR tile size, steps and sampler are fixed in it."""
    from sr3_jax import exported

    self.program = exported.ExportedSampler(path)
    meta = self.program.meta
    fixed = {"--steps": (steps, meta["steps"]), "--sampler": (sampler, meta["sampler"])}
    fixed["--batch"] = (batch, meta["lr_shape"][0])
    fixed["--tile"] = (tile, max(meta["lr_shape"][1:3]))
    for flag, (given, value) in fixed.items():
      if given is not None and given != value:
        raise ValueError(
          f"{flag} {given}: {path} was exported with {flag} {value}; leave {flag} out or export "
          "again with sr3 export"
        )
    _, th, tw, _ = meta["lr_shape"]
    if not 0 <= self.overlap < min(th, tw):
      raise ValueError(f"--overlap {self.overlap} must be in [0, {min(th, tw)}) for {path}'s tiles")
    self.fixed_tile = (th, tw)
    self.tile = max(th, tw)
    self.batch = meta["lr_shape"][0]
    self.factor, self.steps, self.sampler = self.program.factor, self.program.steps, meta["sampler"]
    self.step = meta["step"]

  def _sample(self, lr_batch: np.ndarray, key, gammas=None) -> np.ndarray:
    if self.program is not None:
      if gammas is not None:
        raise ValueError("an exported sampler has its steps fixed; --adaptive needs --checkpoint")
      return self.program(lr_batch.astype(np.float32), np.asarray(jax.random.key_data(key)))
    grid = self.gammas if gammas is None else gammas
    return self.sr_fn(self.params, jax.device_put(lr_batch, self.sharding), grid, key)

  def _tiles(self, rgb: np.ndarray):
    """LR tiles of an (h, w, 3) uint8 image, their positions and the padded size."""
    h, w, _ = rgb.shape
    if self.fixed_tile:  # an export takes tiles of exactly its size: pad a smaller image up to it
      th, tw = self.fixed_tile
      ph, pw = max(h, th), max(w, tw)
    else:
      th, tw, ph, pw = plan(h, w, self.tile, self.multiple, self.overlap)
    lr = images.to_model_range(rgb)
    lr = np.pad(lr, ((0, ph - h), (0, pw - w), (0, 0)), mode="symmetric")
    tiles, pos = split_tiles(lr, th, tw, self.overlap)
    return tiles, pos, (ph, pw)

  def _blend(self, out: np.ndarray, pos, padded, hw) -> np.ndarray:
    f = self.factor
    return blend_tiles(out, pos, *padded, f, self.overlap)[: hw[0] * f, : hw[1] * f]

  def __call__(self, rgb: np.ndarray, index: int, log=None) -> np.ndarray:
    """(h, w, 3) uint8 → K super-resolutions (K, h·f, w·f, 3) in [−1, 1]."""
    tiles, pos, padded = self._tiles(rgb)
    rng = jax.random.fold_in(jax.random.key(self.seed), index)
    outs = self._run(tiles, self.samples, rng, log)
    return np.stack([self._blend(o, pos, padded, rgb.shape[:2]) for o in outs]).astype(np.float32)

  def check_adaptive(self, probe_steps, probes, threshold=None, fraction=None, **_) -> None:
    """One error naming the --adaptive value that cannot work, before anything samples."""
    if self.program is not None:
      raise ValueError(
        "--adaptive changes the step count per tile: give --checkpoint, not an export"
      )
    if probes < 2:
      raise ValueError(f"--probes {probes}: an uncertainty needs at least 2 probe samples")
    if not 1 <= probe_steps:
      raise ValueError(f"--probe-steps {probe_steps} must be at least 1")
    if (threshold is None) == (fraction is None):
      raise ValueError("--adaptive needs one of --threshold T or --refine-fraction F")
    if fraction is not None and not 0.0 <= fraction <= 1.0:
      raise ValueError(f"--refine-fraction {fraction} must be in [0, 1]")

  def adaptive(
    self,
    rgb: np.ndarray,
    index: int,
    probe_steps: int = 2,
    probes: int = 2,
    threshold: float | None = None,
    fraction: float | None = None,
    log=None,
  ) -> tuple[np.ndarray, dict]:
    """Steps spent where the image is uncertain. Every tile first gets `probes` samples at
    `probe_steps` (the same jobs and keys as a plain call with that many samples and steps); a
    tile's uncertainty is the standard deviation over its probes ([0, 1] scale, mean over its
    pixels). Tiles above `threshold`, or the `fraction` most uncertain, get one more sample at the
    sampler's full steps, which replaces them; the rest keep the mean of their probes. Returns
    (image (h·f, w·f, 3) in [−1, 1], what each tile got)."""
    if self.program is not None:
      raise ValueError(
        "--adaptive changes the step count per tile: give --checkpoint, not an export"
      )
    if probes < 2:
      raise ValueError(f"--probes {probes}: an uncertainty needs at least 2 probe samples")
    if (threshold is None) == (fraction is None):
      raise ValueError("--adaptive needs one of --threshold T or --refine-fraction F")
    if fraction is not None and not 0.0 <= fraction <= 1.0:
      raise ValueError(f"--refine-fraction {fraction} must be in [0, 1]")
    tiles, pos, padded = self._tiles(rgb)
    rng = jax.random.fold_in(jax.random.key(self.seed), index)
    grid = inference.inference_grid(self.config, probe_steps)
    probe = self._run(tiles, probes, rng, log, gammas=grid)  # (probes, N, …)
    u = (probe / 2.0).std(axis=0).mean(axis=(1, 2, 3))
    if fraction is not None:
      chosen = np.argsort(-u, kind="stable")[: int(round(fraction * len(u)))]
    else:
      chosen = np.flatnonzero(u > threshold)
    chosen = np.sort(chosen)
    out = probe.mean(axis=0)
    if len(chosen):
      out[chosen] = self._run(tiles[chosen], 1, jax.random.fold_in(rng, 1_000_003), log)[0]
    nfe = np.full(len(u), probes * probe_steps) + np.isin(np.arange(len(u)), chosen) * self.steps
    info = {
      "tiles": len(u),
      "tile_positions": [list(map(int, p)) for p in pos],
      "uncertainty": [float(x) for x in u],
      "refined": [int(i) for i in chosen],
      "steps_per_tile": [int(x) for x in nfe],  # network evaluations per tile
      "network_evaluations": int(nfe.sum()),
      "probe_steps": probe_steps,
      "probes": probes,
      "refine_steps": self.steps,
    }
    return self._blend(out, pos, padded, rgb.shape[:2]).astype(np.float32), info

  def _run(self, tiles: np.ndarray, samples: int, rng, log=None, gammas=None) -> np.ndarray:
    """`samples` super-resolutions of each LR tile (N, th, tw, 3) → (samples, N, th·f, tw·f, 3),
    in fixed-size batches; job k·N + n is sample k of tile n, batch b samples with fold_in(rng, b).
    `gammas` replaces the sampler's grid (another step count)."""
    jobs = np.concatenate([tiles] * samples)
    outs = []
    batches = range(0, len(jobs), self.batch)
    for b, start in enumerate(
      tqdm(batches, desc="  batches", leave=False, file=log or sys.stderr, disable=len(batches) < 2)
    ):
      chunk = jobs[start : start + self.batch]
      full = np.concatenate([chunk, np.repeat(chunk[-1:], self.batch - len(chunk), axis=0)])
      out = self._sample(full, jax.random.fold_in(rng, b), gammas)
      outs.append(np.asarray(out)[: len(chunk)])
    _, th, tw, _ = tiles.shape
    f = self.factor
    return np.concatenate(outs).reshape(samples, len(tiles), th * f, tw * f, 3)


def upscale(
  checkpoint: str | None,
  input_path: str,
  output: str,
  steps: int | None = None,
  sampler: str | None = None,
  samples: int = 1,
  batch: int | None = None,
  tile: int | None = None,
  overlap: int = 8,
  seed: int = 0,
  log=None,
  exported: str | None = None,
  adaptive: dict | None = None,
  overrides: dict | None = None,
) -> dict:
  """Super-resolves every file under `input_path` into `output`; returns (and writes) the report.
  With `adaptive` (Upscaler.adaptive's arguments), each image gets per-tile steps, recorded.

  A file that cannot be read or processed is recorded with its error and the rest go on; the
  report's `failed` counts them.
  """
  log = log or sys.stderr
  files = input_files(input_path)
  if adaptive and samples != 1:
    raise ValueError("--adaptive writes one image per file: leave --samples at 1")
  up = Upscaler(
    checkpoint, steps, sampler, samples, batch, tile, overlap, seed, exported, overrides
  )
  if adaptive:
    up.check_adaptive(**adaptive)
  out_dir = pathlib.Path(output)
  out_dir.mkdir(parents=True, exist_ok=True)
  report = {
    "checkpoint": str(checkpoint or exported),
    "exported": bool(exported),
    "step": up.step,
    "factor": up.factor,
    "steps": up.steps,
    "sampler": up.sampler,
    "samples": up.samples,
    "tile": up.tile,
    "overlap": up.overlap,
    "batch": up.batch,
    "seed": seed,
    **({"overrides": overrides} if overrides else {}),
    "files": [],
  }
  for index, (path, stem) in enumerate(
    tqdm(list(zip(files, _output_stems(files))), desc="upscale", file=log)
  ):
    entry = {"input": str(path)}
    report["files"].append(entry)
    try:
      img = images.load_image(path)
    except images.ImageReadError as e:
      entry["error"] = str(e)
      print(f"sr3 upscale: {e}", file=log)
      continue
    t0 = time.perf_counter()
    try:
      if adaptive:
        image, info = up.adaptive(img.rgb, index, log=log, **adaptive)
        sr = image[None]
        entry["adaptive"] = info
      else:
        sr = up(img.rgb, index, log)
    except (
      Exception
    ) as e:  # one image that fails on device (out of memory, say) does not stop the rest
      entry["error"] = (
        f"{path}: super-resolution failed ({type(e).__name__}: {str(e)[:300]}); "
        f"a smaller --tile or --batch needs less memory"
      )
      print(f"sr3 upscale: {entry['error']}", file=log)
      continue
    hr_h, hr_w = sr.shape[1:3]
    alpha = None if img.alpha is None else images.resize_alpha(img.alpha, hr_h, hr_w)
    written = []

    def save(name: str, x: np.ndarray, with_alpha: bool = True) -> None:
      images.save_png(out_dir / name, x, gray=img.gray, alpha=alpha if with_alpha else None)
      written.append(str(out_dir / name))

    if up.samples == 1:
      save(f"{stem}.png", images.to_uint8(sr[0]))
    else:
      for k, s in enumerate(sr):
        save(f"{stem}_sample{k}.png", images.to_uint8(s))
      save(f"{stem}_mean.png", images.to_uint8(sr.mean(axis=0)))
      std = (sr / 2.0).std(axis=0).mean(axis=-1)  # on the [0, 1] scale, averaged over channels
      images.save_png(out_dir / f"{stem}_std.png", images.heat_map(std))
      written.append(str(out_dir / f"{stem}_std.png"))
      entry.update(std_max=float(std.max()), std_mean=float(std.mean()))
    entry.update(
      outputs=written,
      lr_size=[img.rgb.shape[1], img.rgb.shape[0]],
      hr_size=[hr_w, hr_h],
      seconds=time.perf_counter() - t0,
    )
  report["failed"] = sum("error" in e for e in report["files"])
  (out_dir / "upscale.json").write_text(json.dumps(report, indent=2))
  return report
