"""Datasets: a registry of loaders, seeded train/validation splits, augmentation and resolution.

Every loader returns images as ``uint8`` arrays (N, H, W, 3) or an image-folder index; the search
uses ``train`` / ``val`` (a seeded, class-stratified split of the official training set) and the
``test`` split is kept for final numbers only.

=================  ==============================================================================
``digits``         scikit-learn's bundled 8x8 digits (1,797 images), upsampled to 32x32, 3 channels.
                   The embedded default: no download. Fixed stratified test split of 359 images (20 %).
``cifar10``        ``cifar10.npz`` (``x_train, y_train, x_test, y_test``) or the torchvision
``cifar100``       layout (``cifar-10-batches-py`` / ``cifar-100-python``); ``download=True`` fetches.
``fashion_mnist``  IDX files (gzipped or not); Debian's ``dataset-fashion-mnist`` is found by itself.
                   28x28 grey images are zero-padded to 32x32 and repeated to 3 channels.
``imagefolder``    ``root/train/<class>/*`` and ``root/val/<class>/*`` (or ``test``); e.g. ImageNet-100,
                   Visual Wake Words.
=================  ==============================================================================
"""
from __future__ import annotations

import gzip
import os
import pickle
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from nni_bigLittle.errors import DataError, DataFormatError, DataNotFoundError
from nni_bigLittle.registry import Registry

__all__ = [
    'DataError', 'DataNotFoundError', 'DataFormatError', 'DATASETS', 'register_dataset', 'available_datasets',
    'RawSplits', 'DataSplits', 'load_dataset', 'stratified_split', 'build_transform', 'make_loaders',
    'ArrayDataset', 'FolderDataset', 'read_idx', 'default_data_roots', 'RESOLUTIONS', 'AUGMENTATIONS',
]

RESOLUTIONS = (32, 64, 128, 224)
AUGMENTATIONS = ('none', 'standard', 'randaugment', 'autoaugment')
DATA_ENV = 'NNI_BIGLITTLE_DATA'
DEBIAN_FASHION_MNIST = Path('/usr/share/datasets/fashion-mnist')


@dataclass
class RawSplits:
    """What a loader returns: the official train and test splits."""
    name: str
    train: Any  # uint8 array (N, H, W, 3) or a list of image paths
    train_labels: np.ndarray
    test: Any
    test_labels: np.ndarray
    class_names: list[str]
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.25, 0.25, 0.25)
    source: str = ''


@dataclass
class DataSplits:
    """Train / validation / test datasets ready for a ``DataLoader``."""
    name: str
    train: Dataset
    val: Dataset
    test: Dataset
    num_classes: int
    class_names: list[str]
    resolution: int
    source: str = ''
    info: dict[str, Any] = field(default_factory=dict)


Loader = Callable[..., RawSplits]
DATASETS: Registry[Loader] = Registry('dataset')  # name -> loader(root, download) of its raw splits


def register_dataset(name: str) -> Callable[[Loader], Loader]:
    return DATASETS.register(name)


def available_datasets() -> list[str]:
    return DATASETS.names()


def default_data_roots() -> list[Path]:
    """Where loaders look when no ``root`` is given: ``$NNI_BIGLITTLE_DATA``, then ``~/.cache/nni_bigLittle/data``."""
    roots = []
    if os.environ.get(DATA_ENV):
        roots.append(Path(os.environ[DATA_ENV]).expanduser())
    roots.append(Path.home() / '.cache' / 'nni_bigLittle' / 'data')
    return roots


def _candidates(root: str | os.PathLike | None, name: str) -> list[Path]:
    bases = [Path(root).expanduser()] if root is not None else default_data_roots()
    out = []
    for base in bases:
        out += [base, base / name]
    return out


# ----- loaders --------------------------------------------------------------------------------------------------

@register_dataset('digits')
def load_digits_raw(root: Any = None, download: bool = False) -> RawSplits:
    """scikit-learn's digits (bundled with the package, no download), as 32x32 RGB uint8."""
    from sklearn.datasets import load_digits
    bunch = load_digits()
    images = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1)  # (N, 1, 8, 8) in [0, 1]
    images = torch.nn.functional.interpolate(images, size=(32, 32), mode='bilinear', align_corners=False)
    images = (images.clamp(0, 1) * 255).round().to(torch.uint8).repeat(1, 3, 1, 1).permute(0, 2, 3, 1).numpy()
    labels = bunch.target.astype(np.int64)
    # Digits has no official test split: a fixed stratified 20 % (seed 0, independent of the search seed).
    train_idx, test_idx = stratified_split(labels, int(round(0.2 * len(labels))), seed=0)
    return RawSplits('digits', images[train_idx], labels[train_idx], images[test_idx], labels[test_idx],
                     [str(d) for d in range(10)], mean=(0.19, 0.19, 0.19), std=(0.31, 0.31, 0.31),
                     source='sklearn.datasets.load_digits (UCI optical digits test set), bilinear 8x8 -> 32x32')


def _load_npz(path: Path, name: str) -> RawSplits:
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in ('x_train', 'y_train', 'x_test', 'y_test') if k not in data.files]
            if missing:
                raise DataFormatError(f'{path} lacks the key(s) {missing}; an .npz needs x_train, y_train, x_test, '
                                      f'y_test (found {data.files}).')
            arrays = {k: data[k] for k in ('x_train', 'y_train', 'x_test', 'y_test')}
            class_names = [str(c) for c in data['class_names']] if 'class_names' in data.files else None
    except DataFormatError:
        raise
    except Exception as err:  # zipfile.BadZipFile, OSError, ValueError on truncated files
        raise DataFormatError(f'Cannot read {path}: {err}. The file is corrupt or not an .npz; '
                              'delete it and download or copy it again.') from err
    x_train, x_test = (_to_nhwc3(arrays[k], path, k) for k in ('x_train', 'x_test'))
    y_train, y_test = (np.asarray(arrays[k]).reshape(-1).astype(np.int64) for k in ('y_train', 'y_test'))
    for x, y, split in ((x_train, y_train, 'train'), (x_test, y_test, 'test')):
        if len(x) != len(y):
            raise DataFormatError(f'{path}: x_{split} has {len(x)} images but y_{split} has {len(y)} labels.')
    num_classes = int(max(y_train.max(), y_test.max())) + 1
    return RawSplits(name, x_train, y_train, x_test, y_test, class_names or [str(c) for c in range(num_classes)],
                     source=str(path.name))


def _to_nhwc3(x: np.ndarray, path: Path, key: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim == 4 and x.shape[1] == 3 and x.shape[-1] != 3:
        x = x.transpose(0, 2, 3, 1)
    if x.ndim == 3:
        x = np.repeat(x[..., None], 3, axis=-1)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise DataFormatError(f'{path}: {key} has shape {x.shape}; expected (N, H, W, 3), (N, 3, H, W) or (N, H, W).')
    if x.dtype != np.uint8:
        if x.max() <= 1.0:
            x = x * 255.0
        x = np.clip(np.round(x), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(x)


def _load_cifar_pickles(folder: Path, name: str) -> RawSplits:
    def read(file: Path) -> dict:
        try:
            with open(file, 'rb') as f:
                return pickle.load(f, encoding='latin1')  # the official CIFAR python batches are pickles
        except Exception as err:
            raise DataFormatError(f'Cannot read {file}: {err}. Re-download CIFAR ({name}, download=True).') from err

    label_key = 'labels' if name == 'cifar10' else 'fine_labels'
    if name == 'cifar10':
        train_files = [folder / f'data_batch_{i}' for i in range(1, 6)]
        test_files, meta_file, names_key = [folder / 'test_batch'], folder / 'batches.meta', 'label_names'
    else:
        train_files, test_files = [folder / 'train'], [folder / 'test']
        meta_file, names_key = folder / 'meta', 'fine_label_names'
    missing = [str(f) for f in train_files + test_files if not f.exists()]
    if missing:
        raise DataFormatError(f'{folder} is incomplete: missing {missing}.')

    def stack(files):
        batches = [read(f) for f in files]
        x = np.concatenate([np.asarray(b['data'], dtype=np.uint8).reshape(-1, 3, 32, 32) for b in batches])
        y = np.concatenate([np.asarray(b[label_key], dtype=np.int64) for b in batches])
        return x.transpose(0, 2, 3, 1).copy(), y

    x_train, y_train = stack(train_files)
    x_test, y_test = stack(test_files)
    class_names = read(meta_file)[names_key] if meta_file.exists() else [str(c) for c in range(int(y_train.max()) + 1)]
    return RawSplits(name, x_train, y_train, x_test, y_test, list(class_names), source=str(folder.name))


_CIFAR = {
    'cifar10': dict(npz='cifar10.npz', folder='cifar-10-batches-py', tv='CIFAR10',
                    mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616)),
    'cifar100': dict(npz='cifar100.npz', folder='cifar-100-python', tv='CIFAR100',
                     mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762)),
}


def _load_cifar(name: str, root: Any, download: bool) -> RawSplits:
    info = _CIFAR[name]
    looked = []
    if root is not None and Path(root).is_file():
        raw = _load_npz(Path(root), name)
    else:
        raw = None
        for base in _candidates(root, name):
            for path in (base / info['npz'], base / info['folder']):
                looked.append(str(path))
                if path.is_file():
                    raw = _load_npz(path, name)
                elif path.is_dir():
                    raw = _load_cifar_pickles(path, name)
                if raw is not None:
                    break
            if raw is not None:
                break
        if raw is None and download:
            import torchvision
            target = Path(root).expanduser() if root is not None else default_data_roots()[-1] / name
            getattr(torchvision.datasets, info['tv'])(str(target), train=True, download=True)
            getattr(torchvision.datasets, info['tv'])(str(target), train=False, download=True)
            raw = _load_cifar_pickles(target / info['folder'], name)
        if raw is None:
            raise DataNotFoundError(
                f'{name} not found. Looked for {info["npz"]} or {info["folder"]}/ in: {", ".join(looked)}. '
                f'Pass root=<folder or .npz> (CLI: --root), set ${DATA_ENV}, or allow download=True when online.')
    raw.name, raw.mean, raw.std = name, info['mean'], info['std']
    return raw


@register_dataset('cifar10')
def load_cifar10_raw(root: Any = None, download: bool = False) -> RawSplits:
    return _load_cifar('cifar10', root, download)


@register_dataset('cifar100')
def load_cifar100_raw(root: Any = None, download: bool = False) -> RawSplits:
    return _load_cifar('cifar100', root, download)


_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.int16, 0x0C: np.int32, 0x0D: np.float32, 0x0E: np.float64}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (the MNIST / Fashion-MNIST format), gzipped or not."""
    path = Path(path)
    opener = gzip.open if path.suffix == '.gz' else open
    try:
        with opener(path, 'rb') as f:
            data = f.read()
    except (OSError, EOFError) as err:
        raise DataFormatError(f'Cannot read {path}: {err}.') from err
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise DataFormatError(f'{path} is not an IDX file (bad magic number {data[:4].hex() if data else "empty"}).')
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataFormatError(f'{path}: truncated IDX header.')
    shape = struct.unpack('>' + 'I' * ndim, data[4:header])
    dtype = np.dtype(_IDX_DTYPES[data[2]]).newbyteorder('>')
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) - header != expected:
        raise DataFormatError(f'{path}: IDX header says shape {shape} ({expected} bytes) but the file holds '
                              f'{len(data) - header} bytes; the file is truncated or corrupt.')
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder('='))


FASHION_CLASSES = ['T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker', 'Bag',
                   'Ankle boot']
_FASHION_FILES = {'train_images': 'train-images-idx3-ubyte', 'train_labels': 'train-labels-idx1-ubyte',
                  'test_images': 't10k-images-idx3-ubyte', 'test_labels': 't10k-labels-idx1-ubyte'}


@register_dataset('fashion_mnist')
def load_fashion_mnist_raw(root: Any = None, download: bool = False) -> RawSplits:
    bases = _candidates(root, 'fashion_mnist') + _candidates(root, 'fashion-mnist')
    if root is None:
        bases.append(DEBIAN_FASHION_MNIST)
    looked = []
    for base in bases:
        files = {}
        for key, stem in _FASHION_FILES.items():
            for candidate in (base / stem, base / f'{stem}.gz'):
                if candidate.is_file():
                    files[key] = candidate
                    break
        looked.append(str(base))
        if len(files) == len(_FASHION_FILES):
            arrays = {key: read_idx(path) for key, path in files.items()}
            for split in ('train', 'test'):
                if len(arrays[f'{split}_images']) != len(arrays[f'{split}_labels']):
                    raise DataFormatError(f'{base}: {split} images and labels differ in length.')
            pad = ((0, 0), (2, 2), (2, 2))  # 28x28 -> 32x32 with a zero border (no resampling)
            x_train, x_test = (np.repeat(np.pad(arrays[f'{s}_images'], pad)[..., None], 3, axis=-1)
                               for s in ('train', 'test'))
            return RawSplits('fashion_mnist', x_train, arrays['train_labels'].astype(np.int64), x_test,
                             arrays['test_labels'].astype(np.int64), FASHION_CLASSES,
                             mean=(0.2860,) * 3, std=(0.3530,) * 3, source=str(base))
    raise DataNotFoundError(
        'Fashion-MNIST IDX files (train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-...) not found in: '
        f'{", ".join(looked)}. Install Debian\'s dataset-fashion-mnist (apt install dataset-fashion-mnist), or pass '
        f'root=<folder with the IDX files>, or set ${DATA_ENV}.')


_IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp', '.webp', '.ppm')


def _scan_folder(folder: Path, class_names: list[str] | None) -> tuple[list[str], np.ndarray, list[str]]:
    classes = class_names or sorted(p.name for p in folder.iterdir() if p.is_dir())
    if not classes:
        raise DataFormatError(f'{folder} has no class sub-folders; expected {folder}/<class>/<image>.')
    paths, labels = [], []
    for index, name in enumerate(classes):
        class_dir = folder / name
        if not class_dir.is_dir():
            raise DataFormatError(f'{folder} lacks the class folder {name!r} that the train split has.')
        files = sorted(p for p in class_dir.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
        paths += [str(p) for p in files]
        labels += [index] * len(files)
    if not paths:
        raise DataFormatError(f'No images ({", ".join(_IMAGE_SUFFIXES)}) under {folder}.')
    return paths, np.asarray(labels, dtype=np.int64), classes


@register_dataset('imagefolder')
def load_imagefolder_raw(root: Any = None, download: bool = False) -> RawSplits:
    if root is None:
        raise DataNotFoundError('imagefolder needs root=<folder> holding train/<class>/* and val/<class>/* (or test/).')
    root = Path(root).expanduser()
    train_dir = root / 'train'
    eval_dir = next((root / d for d in ('val', 'test') if (root / d).is_dir()), None)
    if not train_dir.is_dir() or eval_dir is None:
        raise DataNotFoundError(f'{root} needs a train/ folder and a val/ or test/ folder, each with one sub-folder '
                                f'per class (found: {sorted(p.name for p in root.iterdir()) if root.is_dir() else "nothing"}).')
    train, train_labels, classes = _scan_folder(train_dir, None)
    test, test_labels, _ = _scan_folder(eval_dir, classes)
    return RawSplits('imagefolder', train, train_labels, test, test_labels, classes,
                     mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), source=str(root.name))


# ----- splits, transforms, datasets -----------------------------------------------------------------------------

def stratified_split(labels: np.ndarray, val_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded class-stratified split of indices into (train, val) with ``val_size`` validation items."""
    labels = np.asarray(labels)
    if not 0 < val_size < len(labels):
        raise ValueError(f'val_size must be between 1 and {len(labels) - 1}, got {val_size}.')
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    quota = np.floor(counts / counts.sum() * val_size).astype(int)
    # hand out the remainder to the classes with the largest fractional share (ties by class order)
    remainder = val_size - quota.sum()
    order = np.argsort(-(counts / counts.sum() * val_size - quota), kind='stable')
    quota[order[:remainder]] += 1
    val = []
    for cls, q in zip(classes, quota):
        members = np.flatnonzero(labels == cls)
        val.append(rng.permutation(members)[:q])
    val_idx = np.sort(np.concatenate(val))
    train_idx = np.setdiff1d(np.arange(len(labels)), val_idx)
    return train_idx, val_idx


def build_transform(resolution: int, train: bool, augment: str = 'standard', color_jitter: float = 0.0,
                    mean: Sequence[float] = (0.5, 0.5, 0.5), std: Sequence[float] = (0.25, 0.25, 0.25),
                    source_size: int | None = None):
    """uint8 CHW tensor -> normalised float tensor at ``resolution``.

    Train: resize (when the source size differs), random crop with padding of 1/8, horizontal
    flip, optional color jitter and RandAugment / AutoAugment. Eval: resize only.
    """
    from torchvision.transforms import v2
    if resolution not in RESOLUTIONS:
        raise ValueError(f'resolution must be one of {RESOLUTIONS}, got {resolution}.')
    if augment not in AUGMENTATIONS:
        raise ValueError(f'augment must be one of {AUGMENTATIONS}, got {augment!r}.')
    steps = []
    if source_size != resolution:
        steps.append(v2.Resize((resolution, resolution), antialias=True))
    if train and augment != 'none':
        steps += [v2.RandomCrop(resolution, padding=resolution // 8), v2.RandomHorizontalFlip()]
        if color_jitter > 0:
            steps.append(v2.ColorJitter(color_jitter, color_jitter, color_jitter))
        if augment == 'randaugment':
            steps.append(v2.RandAugment())
        elif augment == 'autoaugment':
            steps.append(v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10 if resolution <= 64 else
                                        v2.AutoAugmentPolicy.IMAGENET))
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    return v2.Compose(steps)


class ArrayDataset(Dataset):
    """Images held in memory as uint8 (N, H, W, 3)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform=None):
        self.images = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)  # (N, 3, H, W) view
        self.labels = torch.as_tensor(labels, dtype=torch.long)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        image = self.images[index]
        return (self.transform(image) if self.transform else image), self.labels[index]


class FolderDataset(Dataset):
    """Images read from files on access."""

    def __init__(self, paths: Sequence[str], labels: np.ndarray, transform=None):
        self.paths, self.labels, self.transform = list(paths), torch.as_tensor(labels, dtype=torch.long), transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        from torchvision.io import ImageReadMode, decode_image
        try:
            image = decode_image(self.paths[index], mode=ImageReadMode.RGB)
        except Exception as err:
            raise DataFormatError(f'Cannot decode image {self.paths[index]}: {err}') from err
        return (self.transform(image) if self.transform else image), self.labels[index]


def load_dataset(name: str, root: str | os.PathLike | None = None, *, resolution: int | None = None,
                 val_size: int | float | None = None, seed: int = 0, augment: str = 'standard',
                 color_jitter: float = 0.0, download: bool = False) -> DataSplits:
    """Load ``name`` with a seeded stratified train/validation split.

    ``val_size``: an int, or a fraction of the training set (default 10 %, e.g. 45k/5k for
    CIFAR-10). ``resolution`` defaults to the dataset's native size (32 for the array datasets).
    """
    raw = DATASETS.get(name)(root=root, download=download)
    is_array = isinstance(raw.train, np.ndarray)
    native = raw.train.shape[1] if is_array else None
    resolution = resolution or native or 224
    n_train = len(raw.train_labels)
    if val_size is None:
        val_size = 0.1
    if isinstance(val_size, float):
        val_size = int(round(val_size * n_train))
    train_idx, val_idx = stratified_split(raw.train_labels, val_size, seed)
    train_tf = build_transform(resolution, True, augment, color_jitter, raw.mean, raw.std, native)
    eval_tf = build_transform(resolution, False, augment, 0.0, raw.mean, raw.std, native)
    if is_array:
        make = lambda x, y, tf: ArrayDataset(x, y, tf)  # noqa: E731
        take = lambda idx: raw.train[idx]  # noqa: E731
    else:
        make = lambda x, y, tf: FolderDataset(x, y, tf)  # noqa: E731
        take = lambda idx: [raw.train[i] for i in idx]  # noqa: E731
    return DataSplits(
        name=raw.name,
        train=make(take(train_idx), raw.train_labels[train_idx], train_tf),
        val=make(take(val_idx), raw.train_labels[val_idx], eval_tf),
        test=make(raw.test, raw.test_labels, eval_tf),
        num_classes=len(raw.class_names), class_names=list(raw.class_names), resolution=resolution,
        source=raw.source,
        info={'train': len(train_idx), 'val': len(val_idx), 'test': len(raw.test_labels), 'seed': seed,
              'augment': augment, 'mean': list(raw.mean), 'std': list(raw.std)},
    )


def make_loaders(splits: DataSplits, batch_size: int = 128, eval_batch_size: int | None = None, workers: int = 0,
                 seed: int = 0) -> tuple[DataLoader, DataLoader, DataLoader]:
    """Train (shuffled with a seeded generator), validation and test loaders."""
    generator = torch.Generator().manual_seed(seed)
    eval_batch_size = eval_batch_size or batch_size
    common = dict(num_workers=workers, persistent_workers=workers > 0)
    return (DataLoader(splits.train, batch_size, shuffle=True, generator=generator, drop_last=True, **common),
            DataLoader(splits.val, eval_batch_size, shuffle=False, **common),
            DataLoader(splits.test, eval_batch_size, shuffle=False, **common))
