"""Data loaders on small files written here in the real formats, the embedded digits, and CIFAR-10."""
import gzip
import pickle
import struct

import numpy as np
import pytest
import torch

from nni_bigLittle.data import (DataFormatError, DataNotFoundError, available_datasets, load_dataset, make_loaders,
                                read_idx, stratified_split)

from conftest import SHARED_DATA


def _images(n, size=32, channels=3, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, channels), dtype=np.uint8)


def _check_splits(splits, n_train, n_val, n_test, num_classes, resolution=32):
    assert (len(splits.train), len(splits.val), len(splits.test)) == (n_train, n_val, n_test)
    assert splits.num_classes == num_classes
    for part in (splits.train, splits.val, splits.test):
        x, y = part[0]
        assert x.shape == (3, resolution, resolution) and x.dtype == torch.float32
        assert 0 <= int(y) < num_classes


def test_registry_lists_every_dataset():
    assert set(available_datasets()) >= {'digits', 'cifar10', 'cifar100', 'fashion_mnist', 'imagefolder'}
    with pytest.raises(ValueError, match='Unknown dataset'):
        load_dataset('mnist3d')


def test_digits_end_to_end():
    splits = load_dataset('digits', seed=0)
    _check_splits(splits, 1294, 144, 359, 10)
    train, val, test = make_loaders(splits, batch_size=32, seed=0)
    x, y = next(iter(train))
    assert x.shape == (32, 3, 32, 32) and y.shape == (32,)
    # seeded: same seed same split, another seed another validation set, test split never moves
    again = load_dataset('digits', seed=0)
    other = load_dataset('digits', seed=1)
    assert torch.equal(splits.val.images, again.val.images)
    assert not torch.equal(splits.val.images, other.val.images)
    assert torch.equal(splits.test.images, other.test.images)
    counts = np.bincount(splits.val.labels.numpy(), minlength=10)
    assert counts.max() - counts.min() <= 2  # stratified
    assert load_dataset('digits', resolution=64).train[0][0].shape == (3, 64, 64)


@pytest.mark.parametrize('augment', ['none', 'standard', 'randaugment', 'autoaugment'])
def test_augmentations_run(augment):
    splits = load_dataset('digits', augment=augment, color_jitter=0.2 if augment == 'standard' else 0.0)
    x, _ = splits.train[0]
    assert x.shape == (3, 32, 32) and torch.isfinite(x).all()


def test_bad_options_are_rejected():
    with pytest.raises(ValueError, match='resolution must be one of'):
        load_dataset('digits', resolution=48)
    with pytest.raises(ValueError, match='augment must be one of'):
        load_dataset('digits', augment='mixup')


def test_stratified_split_is_balanced_and_disjoint():
    labels = np.repeat(np.arange(10), 100)
    train, val = stratified_split(labels, 50, seed=3)
    assert len(val) == 50 and len(np.intersect1d(train, val)) == 0 and len(train) + len(val) == 1000
    assert set(np.bincount(labels[val])) == {5}


def test_cifar_npz(tmp_path):
    path = tmp_path / 'cifar10.npz'
    np.savez_compressed(path, x_train=_images(60), y_train=np.repeat(np.arange(10), 6).astype(np.uint8),
                        x_test=_images(20, seed=1), y_test=np.repeat(np.arange(10), 2).astype(np.uint8),
                        class_names=np.array([f'c{i}' for i in range(10)]))
    for root in (tmp_path, path):  # a folder holding cifar10.npz, or the file itself
        splits = load_dataset('cifar10', root, val_size=10)
        _check_splits(splits, 50, 10, 20, 10)
        assert splits.class_names[3] == 'c3'
    assert set(np.bincount(splits.val.labels.numpy())) == {1}


def test_cifar_npz_channel_first_and_resolution(tmp_path):
    path = tmp_path / 'c.npz'
    np.savez(path, x_train=_images(20).transpose(0, 3, 1, 2), y_train=np.arange(20) % 4,
             x_test=_images(8).transpose(0, 3, 1, 2), y_test=np.arange(8) % 4)
    splits = load_dataset('cifar10', path, val_size=4, resolution=64)
    _check_splits(splits, 16, 4, 8, 4, resolution=64)


def _write_cifar10_pickles(folder, per_batch=10):
    folder.mkdir()
    for i in range(1, 6):
        batch = {'data': _images(per_batch, seed=i).transpose(0, 3, 1, 2).reshape(per_batch, -1),
                 'labels': list(np.arange(per_batch) % 10)}
        (folder / f'data_batch_{i}').write_bytes(pickle.dumps(batch))
    (folder / 'test_batch').write_bytes(pickle.dumps(
        {'data': _images(10, seed=9).transpose(0, 3, 1, 2).reshape(10, -1), 'labels': list(range(10))}))
    (folder / 'batches.meta').write_bytes(pickle.dumps({'label_names': [f'n{i}' for i in range(10)]}))


def test_cifar10_torchvision_layout(tmp_path):
    _write_cifar10_pickles(tmp_path / 'cifar-10-batches-py')
    splits = load_dataset('cifar10', tmp_path, val_size=10)
    _check_splits(splits, 40, 10, 10, 10)
    assert splits.class_names[0] == 'n0'
    # pixels survive the CHW-flat -> HWC conversion
    raw = pickle.loads((tmp_path / 'cifar-10-batches-py' / 'test_batch').read_bytes())['data'][0]
    assert torch.equal(splits.test.images[0].reshape(-1), torch.as_tensor(raw))


def test_cifar100_torchvision_layout(tmp_path):
    folder = tmp_path / 'cifar-100-python'
    folder.mkdir()
    for name, n in (('train', 200), ('test', 100)):
        (folder / name).write_bytes(pickle.dumps({'data': _images(n).transpose(0, 3, 1, 2).reshape(n, -1),
                                                  'fine_labels': list(np.arange(n) % 100)}))
    (folder / 'meta').write_bytes(pickle.dumps({'fine_label_names': [f'f{i}' for i in range(100)]}))
    splits = load_dataset('cifar100', tmp_path, val_size=100)
    _check_splits(splits, 100, 100, 100, 100)


def test_cifar_missing_and_corrupt(tmp_path):
    with pytest.raises(DataNotFoundError) as info:
        load_dataset('cifar10', tmp_path / 'nowhere')
    message = str(info.value)
    assert 'nowhere' in message and 'cifar10.npz' in message and 'download=True' in message
    assert isinstance(info.value, FileNotFoundError)

    (tmp_path / 'cifar10.npz').write_bytes(b'not a zip file at all')
    with pytest.raises(DataFormatError, match='corrupt'):
        load_dataset('cifar10', tmp_path)
    np.savez(tmp_path / 'cifar10.npz', x_train=_images(4), y_train=np.arange(4))
    with pytest.raises(DataFormatError, match=r"lacks the key\(s\) \['x_test', 'y_test'\]"):
        load_dataset('cifar10', tmp_path)
    np.savez(tmp_path / 'cifar10.npz', x_train=_images(4), y_train=np.arange(3), x_test=_images(2), y_test=[0, 1])
    with pytest.raises(DataFormatError, match='4 images but y_train has 3 labels'):
        load_dataset('cifar10', tmp_path)


def _write_idx(path, array, gz):
    codes = {np.uint8: 0x08}
    header = struct.pack('>BBBB', 0, 0, codes[array.dtype.type], array.ndim) + struct.pack('>' + 'I' * array.ndim,
                                                                                           *array.shape)
    data = header + array.astype('>u1').tobytes()
    if gz:
        path = path.with_name(path.name + '.gz')
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


@pytest.mark.parametrize('gz', [True, False])
def test_fashion_mnist_idx(tmp_path, gz):
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (30, 28, 28), dtype=np.uint8)
    test = rng.integers(0, 256, (10, 28, 28), dtype=np.uint8)
    _write_idx(tmp_path / 'train-images-idx3-ubyte', train, gz)
    _write_idx(tmp_path / 'train-labels-idx1-ubyte', (np.arange(30) % 10).astype(np.uint8), gz)
    _write_idx(tmp_path / 't10k-images-idx3-ubyte', test, gz)
    _write_idx(tmp_path / 't10k-labels-idx1-ubyte', (np.arange(10) % 10).astype(np.uint8), gz)
    splits = load_dataset('fashion_mnist', tmp_path, val_size=10)
    _check_splits(splits, 20, 10, 10, 10)
    # zero border of 2 pixels, the original image inside, grey repeated on 3 channels
    image = splits.test.images[0]
    assert image.shape == (3, 32, 32) and int(image[:, :2].sum()) == 0
    assert torch.equal(image[0, 2:30, 2:30], torch.as_tensor(test[0])) and torch.equal(image[0], image[2])


def test_idx_errors(tmp_path):
    path = _write_idx(tmp_path / 'x-idx3-ubyte', np.zeros((4, 28, 28), np.uint8), gz=False)
    assert read_idx(path).shape == (4, 28, 28)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DataFormatError, match='truncated or corrupt'):
        read_idx(path)
    path.write_bytes(b'\x12\x34\x56\x78')
    with pytest.raises(DataFormatError, match='not an IDX file'):
        read_idx(path)


def test_fashion_mnist_missing_says_how_to_fix(tmp_path):
    with pytest.raises(DataNotFoundError, match='dataset-fashion-mnist'):
        load_dataset('fashion_mnist', tmp_path)


def test_imagefolder(tmp_path):
    from PIL import Image
    rng = np.random.default_rng(0)
    for split, n in (('train', 6), ('val', 2)):
        for cls in ('cat', 'dog'):
            folder = tmp_path / split / cls
            folder.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(folder / f'{i}.png')
    splits = load_dataset('imagefolder', tmp_path, resolution=64, val_size=2)
    _check_splits(splits, 10, 2, 4, 2, resolution=64)
    assert splits.class_names == ['cat', 'dog']
    (tmp_path / 'val' / 'dog' / '0.png').write_bytes(b'broken')
    with pytest.raises(DataFormatError, match='Cannot decode'):
        [splits.test[i] for i in range(len(splits.test))]


def test_imagefolder_layout_errors(tmp_path):
    with pytest.raises(DataNotFoundError, match='needs root'):
        load_dataset('imagefolder')
    (tmp_path / 'train' / 'a').mkdir(parents=True)
    with pytest.raises(DataNotFoundError, match='val/ or test/'):
        load_dataset('imagefolder', tmp_path)


CIFAR10_NPZ = SHARED_DATA / 'cifar10' / 'cifar10.npz'


@pytest.mark.skipif(not CIFAR10_NPZ.is_file(), reason=f'CIFAR-10 archive not present at {CIFAR10_NPZ} '
                                                      '(the shared data folder beside the repository)')
def test_cifar10_shared_archive_gives_45k_5k_10k_balanced():
    splits = load_dataset('cifar10', CIFAR10_NPZ, seed=0)
    _check_splits(splits, 45000, 5000, 10000, 10)
    assert splits.class_names[0] == 'airplane'
    for part, per_class in ((splits.train, 4500), (splits.val, 500), (splits.test, 1000)):
        assert set(np.bincount(part.labels.numpy(), minlength=10)) == {per_class}
    # the validation images are training images, never test images
    assert len(splits.train) + len(splits.val) == 50000
