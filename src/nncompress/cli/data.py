"""Calibration and validation items from files: a folder of images, a .npy/.npz, or a text file.

Every item is one model input with a batch of one: an array for single-input models, a dict of
arrays (input name -> array) otherwise; torch tensors for PyTorch models. Items are read lazily.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nncompress.cli.common import float_list, size_pair
from nncompress.cli.models import LoadedModel
from nncompress.errors import CalibrationError, InvalidPathError, ModuleNotFoundError, ValidationError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
DATA_KINDS = "a folder of images, a .npy or .npz file, or a text file (.txt, one sample a line)"


class Items(Sequence):
    """``length`` items made on demand by ``make(index)`` (re-iterable, so the API may read it twice)."""

    def __init__(self, length: int, make: Callable[[int], Any]):
        self._length, self._make = length, make

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: int) -> Any:
        if isinstance(index, slice):
            return [self._make(i) for i in range(*index.indices(self._length))]
        if not -self._length <= index < self._length:
            raise IndexError(index)
        return self._make(index % self._length)


def add_data_options(parser: argparse.ArgumentParser, required: bool) -> None:
    group = parser.add_argument_group("calibration data")
    group.add_argument("--data", required=required, metavar="PATH", help=f"calibration data: {DATA_KINDS}")
    group.add_argument("--input-size", type=size_pair, metavar="H[,W]",
                       help="images are resized to this size (default: the model's static input size)")
    group.add_argument("--mean", type=float_list, default=[0.0], metavar="M[,M,M]",
                       help="per-channel mean subtracted from 0..255 pixels (default 0)")
    group.add_argument("--std", type=float_list, default=[255.0], metavar="S[,S,S]",
                       help="per-channel divisor after the mean (default 255: pixels in 0..1)")
    group.add_argument("--layout", choices=("nchw", "nhwc"), help="image tensor layout (default: the model's, else "
                                                                   "nchw)")
    group.add_argument("--channels", type=int, choices=(1, 3), help="1 (grayscale) or 3 (RGB; default: the model's)")
    group.add_argument("--tokenizer", metavar="FOLDER", help="Hugging Face folder whose tokenizer reads text data "
                                                             "(default: the model folder)")
    group.add_argument("--seq-len", type=int, default=128, help="text: tokens per line at most (default 128)")
    group.add_argument("--pad", action="store_true", help="text: pad every line to --seq-len tokens")


def load_items(path: str, loaded: LoadedModel, args: argparse.Namespace) -> Items:
    """The items in ``path`` as inputs of ``loaded``'s model."""
    source = Path(path)
    if not source.exists():
        raise InvalidPathError(f"data {path!r} does not exist; give {DATA_KINDS}")
    if source.is_dir():
        items = _images(source, loaded, args)
    elif source.suffix.lower() == ".npy":
        items = _npy(source, loaded)
    elif source.suffix.lower() == ".npz":
        items = _npz(source, loaded)
    elif source.suffix.lower() in (".txt", ".text"):
        items = _text(source, loaded, args)
    else:
        raise ValidationError(f"data {path!r} has suffix {source.suffix!r}; give {DATA_KINDS}")
    if len(items) == 0:
        raise CalibrationError(f"data {path!r} holds no items")
    if loaded.backend == "torch":
        return Items(len(items), lambda i: _to_torch(items[i]))
    return items


def _to_torch(item: Any) -> Any:
    import torch

    if isinstance(item, dict):
        return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in item.items()}
    return torch.from_numpy(np.ascontiguousarray(item))


def _float32(array: np.ndarray) -> np.ndarray:
    return array.astype(np.float32) if array.dtype == np.float64 else np.asarray(array)


def _single_input(loaded: LoadedModel, what: str) -> tuple | None:
    """The shape of the model's only input (None when unknown); raises for multi-input models."""
    if len(loaded.input_shapes) > 1:
        raise ValidationError(f"{what} gives one array per item but the model has {len(loaded.input_shapes)} "
                              f"inputs ({', '.join(loaded.input_shapes)}); give an .npz with one array per input name")
    return next(iter(loaded.input_shapes.values()), None)


def _npy(path: Path, loaded: LoadedModel) -> Items:
    array = np.load(path, mmap_mode="r", allow_pickle=False)
    shape = _single_input(loaded, f"{path.name!r}")
    keep_batch = _keeps_batch(array.shape, shape, path.name)
    return Items(array.shape[0], lambda i: _float32(np.array(array[i:i + 1] if keep_batch else array[i])))


def _keeps_batch(data_shape: tuple, input_shape: tuple | None, name: str) -> bool:
    """Whether ``data[i:i+1]`` (a batch of one) or ``data[i]`` (items stored with their batch axis) is an input."""
    if len(data_shape) == 0:
        raise ValidationError(f"{name}: a scalar array has no items; items lie along axis 0")
    if input_shape is None or len(input_shape) == 0 or len(data_shape) == len(input_shape):
        return True
    if len(data_shape) == len(input_shape) + 1:
        return False
    raise ValidationError(f"{name}: arrays of shape {tuple(data_shape)} hold items along axis 0, which does not fit "
                          f"the model input of shape {tuple(input_shape)} (None = dynamic)")


def _npz(path: Path, loaded: LoadedModel) -> Items:
    archive = np.load(path, allow_pickle=False)
    keys = list(archive.files)
    valid = loaded.input_names
    unknown = [k for k in keys if valid and k not in valid]
    if unknown:
        raise ValidationError(f"{path.name!r}: key {unknown[0]!r} is not a model input; the model's inputs are "
                              f"{', '.join(repr(n) for n in valid)} (npz keys are input names)")
    missing = [n for n in loaded.input_shapes if n not in keys]
    if missing:
        raise ValidationError(f"{path.name!r} has no array for model input {missing[0]!r} (keys: {', '.join(keys)})")
    arrays = {k: archive[k] for k in keys}
    lengths = {k: a.shape[0] if a.ndim else 0 for k, a in arrays.items()}
    if len(set(lengths.values())) != 1:
        raise ValidationError(f"{path.name!r}: every array must hold the same number of items along axis 0; got "
                              f"{', '.join(f'{k}: {n}' for k, n in lengths.items())}")
    batch = {k: _keeps_batch(a.shape, loaded.input_shapes.get(k), f"{path.name!r} key {k!r}")
             for k, a in arrays.items()}
    return Items(next(iter(lengths.values())),
                 lambda i: {k: _float32(a[i:i + 1] if batch[k] else a[i]) for k, a in arrays.items()})


def _text(path: Path, loaded: LoadedModel, args: argparse.Namespace) -> Items:
    folder = Path(args.tokenizer) if args.tokenizer else loaded.hf_folder
    if folder is None:
        raise ValidationError(f"text data {path.name!r} needs a tokenizer: give --tokenizer path/to/hf_folder")
    if args.seq_len < 1:
        raise ValidationError(f"--seq-len must be a positive integer; got {args.seq_len}")
    tokenizer = load_tokenizer(folder)
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    wanted = loaded.input_names

    def make(i: int) -> dict:
        encoded = tokenizer(lines[i], truncation=True, max_length=args.seq_len, return_tensors="np",
                            padding="max_length" if args.pad else False)
        item = {k: np.asarray(v, dtype=np.int64) for k, v in encoded.items() if not wanted or k in wanted}
        missing = [n for n in loaded.input_shapes if n not in item]
        if missing:
            raise ValidationError(f"the tokenizer gives {', '.join(encoded)} but the model also needs input "
                                  f"{missing[0]!r}; give an .npz with every input instead")
        return item

    return Items(len(lines), make)


def load_tokenizer(folder: Path) -> Any:
    try:
        from transformers import AutoTokenizer
    except ImportError as exc:
        raise ModuleNotFoundError(f"text data needs the 'transformers' package ({exc})") from exc
    if not Path(folder).is_dir():
        raise InvalidPathError(f"tokenizer folder {str(folder)!r} does not exist")
    try:
        return AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ValidationError(f"no tokenizer could be read from {str(folder)!r}: {exc}") from exc


def _image_geometry(loaded: LoadedModel, args: argparse.Namespace) -> tuple[tuple[int, int], int, str]:
    """(height, width), channels and layout of image items: options first, then the model's input shape."""
    shape = _single_input(loaded, "a folder of images")
    layout, channels, size = args.layout, args.channels, args.input_size
    if shape and len(shape) == 4:
        if layout is None:
            layout = "nhwc" if shape[3] in (1, 3) and shape[1] not in (1, 3) else "nchw"
        c, h, w = (shape[1], shape[2], shape[3]) if layout == "nchw" else (shape[3], shape[1], shape[2])
        channels = channels or (c if c in (1, 3) else None)
        if size is None and h and w:
            size = (h, w)
    if size is None:
        raise ValidationError("the model's input size is not fixed: give --input-size H,W for the images")
    return size, channels or 3, layout or "nchw"


def _images(folder: Path, loaded: LoadedModel, args: argparse.Namespace) -> Items:
    files = sorted(p for p in folder.iterdir() if p.is_file())
    images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    others = [p.name for p in files if p not in images]
    if others:
        print(f"nncompress: note: {len(others)} files in {str(folder)!r} are not images and are not read "
              f"({', '.join(others[:3])}{', ...' if len(others) > 3 else ''})", file=sys.stderr)
    size, channels, layout = _image_geometry(loaded, args)
    mean, std = _per_channel(args.mean, channels, "--mean"), _per_channel(args.std, channels, "--std")
    if np.any(std == 0):
        raise ValidationError(f"--std must not contain 0; got {args.std}")
    read = _image_reader()

    def make(i: int) -> np.ndarray:
        pixels = read(images[i], size, channels)  # H, W, C float32 0..255
        pixels = (pixels - mean) / std
        array = pixels.transpose(2, 0, 1) if layout == "nchw" else pixels
        return np.ascontiguousarray(array[None], dtype=np.float32)

    return Items(len(images), make)


def _per_channel(values: list[float], channels: int, option: str) -> np.ndarray:
    if len(values) not in (1, channels):
        raise ValidationError(f"{option} needs 1 or {channels} values (one per channel); got {len(values)}")
    return np.asarray(values, dtype=np.float32)


def _image_reader() -> Callable[[Path, tuple[int, int], int], np.ndarray]:
    """Pillow where installed, else scikit-image: (path, (h, w), channels) -> H x W x C float32 in 0..255."""
    try:
        from PIL import Image
    except ImportError:
        Image = None
    if Image is not None:
        def read_pil(path: Path, size: tuple[int, int], channels: int) -> np.ndarray:
            with Image.open(path) as image:
                image = image.convert("L" if channels == 1 else "RGB").resize((size[1], size[0]), Image.BILINEAR)
                return np.asarray(image, dtype=np.float32).reshape(size[0], size[1], channels)
        return read_pil
    try:
        from skimage import color, io, transform
    except ImportError as exc:
        raise ModuleNotFoundError(f"reading images needs Pillow or scikit-image ({exc}); pip install pillow") from exc

    def read_skimage(path: Path, size: tuple[int, int], channels: int) -> np.ndarray:
        image = io.imread(path)
        image = image[..., :3] if image.ndim == 3 else np.stack([image] * 3, axis=-1)
        if channels == 1:
            image = color.rgb2gray(image)[..., None] * 255.0
        return transform.resize(image.astype(np.float32), size, preserve_range=True).astype(np.float32)
    return read_skimage
