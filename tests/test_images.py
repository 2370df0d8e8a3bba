"""Image-classification data: batch augmentation, CIFAR-10 (official archive format, served locally), image folders."""

import hashlib
import io
import pickle
import tarfile
from types import SimpleNamespace

import pytest
import torch

from zoo.data import CIFAR10DataModule, ImageFolderDataModule, shift_and_flip
from zoo.errors import DataFileError, DataNotFoundError

from conftest import write_image_folder

# --- augmentation --------------------------------------------------------------------------------------------------


def shifted(image: torch.Tensor, dy: int, dx: int, fill: str) -> torch.Tensor:
    """Reference: ``image`` [C, H, W] moved down by dy and right by dx, border filled by ``fill``."""
    c, h, w = image.shape
    rows = torch.arange(h) - dy
    cols = torch.arange(w) - dx
    out = image[:, rows.clamp(0, h - 1)][:, :, cols.clamp(0, w - 1)]
    if fill == "zeros":
        outside = ((rows < 0) | (rows >= h))[:, None] | ((cols < 0) | (cols >= w))[None, :]
        out = out.masked_fill(outside, 0.0)
    return out


@pytest.mark.parametrize("fill", ["edge", "zeros"])
def test_each_image_is_a_whole_pixel_shift_within_range_possibly_mirrored(fill):
    images = torch.rand(64, 2, 9, 11, generator=torch.Generator().manual_seed(0)) + 1  # no zeros in the image
    out = shift_and_flip(images, (2, 3), fill, hflip=True, generator=torch.Generator().manual_seed(1))
    assert out.shape == images.shape
    seen_shifts, flips = set(), 0
    for image, result in zip(images, out, strict=True):
        matches = [(dy, dx, flip) for dy in range(-2, 3) for dx in range(-3, 4) for flip in (False, True)
                   if torch.equal(result, shifted(image.flip(-1) if flip else image, dy, dx, fill))]
        assert matches, "an output image is no allowed shift of its input"
        seen_shifts.add(matches[0][:2])
        flips += matches[0][2]
    assert len(seen_shifts) > 15  # shifts vary across the batch (35 possible)
    assert 16 < flips < 48  # about half mirrored


def test_no_shift_and_no_flip_is_the_identity_and_the_generator_makes_it_repeatable():
    images = torch.rand(8, 1, 6, 6)
    assert torch.equal(shift_and_flip(images, 0, hflip=False), images)
    a = shift_and_flip(images, 2, generator=torch.Generator().manual_seed(5))
    b = shift_and_flip(images, 2, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="fill must be"):
        shift_and_flip(images, 1, fill="reflect")


# --- image folders ---------------------------------------------------------------------------------------------------


def test_image_folder_properties_splits_and_labels(image_folder):
    dm = ImageFolderDataModule(str(image_folder), val_size=6, grayscale=False)
    assert dm.classes == ["cat", "dog", "frog"] and dm.num_classes == 3 and dm.in_shape == [3, 8, 8]
    train, val, test = dm.dataset("train"), dm.dataset("val"), dm.dataset("test")
    assert (len(train), len(val), len(test)) == (30, 6, 12)
    assert train.tensors[0].dtype == torch.uint8
    # train and val partition the training folder: every image exactly once
    pairs = {(bytes(x.numpy()), int(y)) for x, y in zip(*train.tensors, strict=True)}
    pairs |= {(bytes(x.numpy()), int(y)) for x, y in zip(*val.tensors, strict=True)}
    assert len(pairs) == 36
    assert torch.bincount(test.tensors[1]).tolist() == [4, 4, 4]
    # the split is seeded: the same in a second instance, another with another seed
    again = ImageFolderDataModule(str(image_folder), val_size=6, grayscale=False)
    assert torch.equal(again.dataset("val").tensors[0], val.tensors[0])
    other = ImageFolderDataModule(str(image_folder), val_size=6, grayscale=False, seed=1)
    assert not torch.equal(other.dataset("val").tensors[0], val.tensors[0])


def test_images_reach_the_model_as_floats_grayscale_as_the_mean_of_rgb(image_folder):
    dm = ImageFolderDataModule(str(image_folder), val_size=6, grayscale=True)
    assert dm.in_shape == [1, 8, 8]
    raw, labels = dm.dataset("test").tensors
    images, out_labels = dm.on_after_batch_transfer((raw, labels), 0)  # no trainer: evaluation, no augmentation
    assert images.dtype == torch.float32 and images.shape == (12, 1, 8, 8) and out_labels is labels
    torch.testing.assert_close(images, raw.double().mean(1, keepdim=True).float() / 255)
    normalised = ImageFolderDataModule(str(image_folder), val_size=6, mean=[0.5], std=[0.25])
    torch.testing.assert_close(normalised.prepare_images(raw), (images - 0.5) / 0.25)


def test_training_batches_are_augmented_repeatably_per_step(image_folder):
    dm = ImageFolderDataModule(str(image_folder), val_size=6, grayscale=False)
    raw, labels = dm.dataset("train").tensors
    dm.trainer = SimpleNamespace(training=True, global_step=3, global_rank=0)
    first = dm.on_after_batch_transfer((raw, labels), 0)[0]
    assert torch.equal(dm.on_after_batch_transfer((raw, labels), 0)[0], first)  # a resumed step augments alike
    assert not torch.equal(first, dm.prepare_images(raw))
    dm.trainer = SimpleNamespace(training=True, global_step=4, global_rank=0)
    assert not torch.equal(dm.on_after_batch_transfer((raw, labels), 0)[0], first)
    dm.trainer = SimpleNamespace(training=False, global_step=4, global_rank=0)  # validation inside fit
    assert torch.equal(dm.on_after_batch_transfer((raw, labels), 0)[0], dm.prepare_images(raw))
    plain = ImageFolderDataModule(str(image_folder), val_size=6, grayscale=False, augment=False)
    plain.trainer = SimpleNamespace(training=True, global_step=3, global_rank=0)
    assert torch.equal(plain.on_after_batch_transfer((raw, labels), 0)[0], plain.prepare_images(raw))


def test_image_folder_errors_name_the_fix(tmp_path, image_folder):
    with pytest.raises(DataNotFoundError, match="set --data.init_args.root"):
        ImageFolderDataModule(str(tmp_path / "nowhere"))
    (tmp_path / "flat" / "train").mkdir(parents=True)
    (tmp_path / "flat" / "test").mkdir()
    with pytest.raises(DataFileError, match="folder of class folders"):
        _ = ImageFolderDataModule(str(tmp_path / "flat")).num_classes
    odd = write_image_folder(tmp_path / "odd", per_class=(3, 1))
    write_image_folder(tmp_path / "odd_big", classes=("cat",), per_class=(1, 1), size=(9, 8))
    (tmp_path / "odd_big" / "train" / "cat" / "0000.png").rename(odd / "train" / "dog" / "9999.png")
    with pytest.raises(DataFileError, match="same size: resize"):
        ImageFolderDataModule(str(odd), val_size=1).setup("fit")
    other = write_image_folder(tmp_path / "other", per_class=(3, 1))
    (other / "test" / "frog").rename(other / "test" / "toad")
    with pytest.raises(DataFileError, match="same class folders"):
        ImageFolderDataModule(str(other), val_size=1).setup("test")
    broken = write_image_folder(tmp_path / "broken", per_class=(3, 1))
    (broken / "train" / "cat" / "0000.png").write_bytes(b"not a png")  # the very first image
    with pytest.raises(DataFileError, match=r"cannot decode .*cat/0000.png .*remove or replace the file"):
        ImageFolderDataModule(str(broken), val_size=1).setup("fit")
    with pytest.raises(DataFileError, match="leaves no training images"):
        ImageFolderDataModule(str(image_folder), val_size=36).setup("fit")
    with pytest.raises(ValueError, match="needs 3 value"):
        ImageFolderDataModule(str(image_folder), grayscale=False, mean=[0.5], std=[0.2])


# --- CIFAR-10 in the official python format ---------------------------------------------------------------------------


def test_cifar_downloads_verifies_extracts_and_loads(tmp_path, server, tiny_cifar):
    server.routes["/cifar.tar.gz"] = (tiny_cifar, None)
    root = tmp_path / "cifar"
    dm = CIFAR10DataModule(root=str(root), download=True, url=server.url + "/cifar.tar.gz",
                           md5=hashlib.md5(tiny_cifar).hexdigest(), val_size=4, grayscale=False)
    assert dm.in_shape == [3, 32, 32] and dm.num_classes == 10  # known without touching the data
    assert server.requests == []
    dm.prepare_data()
    assert (root / "cifar-10-python.tar.gz").read_bytes() == tiny_cifar
    images, labels = dm.dataset("train").tensors
    assert images.shape == (16, 3, 32, 32) and images.dtype == torch.uint8 and len(dm.dataset("val")) == 4
    test_images, _ = dm.dataset("test").tensors
    # pixels in the official row layout: 1024 red, then green, then blue values per image
    with tarfile.open(fileobj=io.BytesIO(tiny_cifar)) as tar:
        batch = pickle.loads(tar.extractfile("cifar-10-batches-py/test_batch").read())
    assert torch.equal(test_images, torch.from_numpy(batch["data"]).view(-1, 3, 32, 32))
    CIFAR10DataModule(root=str(root), download=True, url=server.url + "/cifar.tar.gz").prepare_data()
    assert server.requests == ["/cifar.tar.gz"]  # present data is not fetched again


def test_cifar_missing_with_download_off_names_the_fix(tmp_path):
    dm = CIFAR10DataModule(root=str(tmp_path / "empty"))
    with pytest.raises(DataNotFoundError, match="--data.init_args.download true"):
        dm.setup("fit")


def test_a_corrupted_download_fails_the_checksum_and_nothing_is_kept(tmp_path, server, tiny_cifar):
    server.routes["/cifar.tar.gz"] = (tiny_cifar[:-10] + b"0123456789", None)
    root = tmp_path / "cifar"
    dm = CIFAR10DataModule(root=str(root), download=True, url=server.url + "/cifar.tar.gz",
                           md5=hashlib.md5(tiny_cifar).hexdigest())
    with pytest.raises(DataFileError, match="md5"):
        dm.prepare_data()
    assert not root.exists() or list(root.iterdir()) == []


def test_a_corrupted_archive_on_disk_fails_the_checksum_before_extraction(tmp_path, tiny_cifar):
    root = tmp_path / "cifar"
    root.mkdir()
    (root / "cifar-10-python.tar.gz").write_bytes(tiny_cifar[:-10] + b"0123456789")
    dm = CIFAR10DataModule(root=str(root), md5=hashlib.md5(tiny_cifar).hexdigest())
    with pytest.raises(DataFileError, match="Delete it and download again"):
        dm.setup("fit")
    assert not (root / "cifar-10-batches-py").exists()


def test_corrupted_extracted_files_fail_torchvisions_per_file_checksums(tmp_path, tiny_cifar):
    root = tmp_path / "cifar"
    with tarfile.open(fileobj=io.BytesIO(tiny_cifar)) as tar:
        tar.extractall(root, filter="data")
    with open(root / "cifar-10-batches-py" / "data_batch_3", "r+b") as f:
        f.seek(100)
        f.write(b"garbage")
    with pytest.raises(DataFileError, match="corrupted or incomplete"):
        CIFAR10DataModule(root=str(root)).setup("fit")
