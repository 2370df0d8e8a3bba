"""Image classification data: CIFAR-10 and folder-of-class-folders datasets, decoded once and kept as uint8 tensors.

The images stay uint8 in memory (CIFAR-10: 180 MB) and batches are taken by one fancy-index each
(``zoo.data.loading``). Everything per-pixel happens on whole batches *after* they reach the model's device
(``on_after_batch_transfer``, so on the GPU when there is one): conversion to float in [0, 1], grayscale as the mean
of R, G and B (Lindsey et al. 2019), in training the random shifts and horizontal flips, then an optional per-channel
normalisation. No per-image PIL transforms, no worker processes.

Augmentation (training batches only):

- ``max_shift``: each image moves by a random whole number of pixels, independently in x and y, uniformly in
  ``[-round(max_shift * size), +round(max_shift * size)]``. The uncovered border is filled with the edge pixels
  (``shift_fill="edge"``, what Keras' ``ImageDataGenerator(width_shift_range=0.1, height_shift_range=0.1)`` in the
  Lindsey reference code does with its default ``fill_mode='nearest'``; Keras also allows sub-pixel shifts, which we
  round to whole pixels) or with zeros (``"zeros"``, what torchvision's ``RandomCrop(32, padding=4)`` does:
  ``max_shift=0.125``).
- ``hflip``: each image is mirrored left-right with probability 1/2.
"""

from __future__ import annotations

import pickle
import sys
import tarfile
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from zoo.data.loading import TensorBatchDataset, TensorSplitsDataModule
from zoo.errors import DataFileError, DataNotFoundError
from zoo.files import download, file_digest

__all__ = ["CIFAR10DataModule", "ImageClassificationDataModule", "ImageFolderDataModule", "shift_and_flip"]

# The official archive (https://www.cs.toronto.edu/~kriz/cifar.html) and its published md5.
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")


def shift_and_flip(images: torch.Tensor, max_shift: tuple[int, int] | int, fill: str = "edge",
                   hflip: bool = True, generator: torch.Generator | None = None) -> torch.Tensor:
    """Randomly shift each image of a float batch [B, C, H, W] by whole pixels and mirror half of them.

    ``max_shift`` = (dy, dx) or one int for both: shifts are uniform in [-dy, dy] x [-dx, dx]. ``fill`` is "edge"
    (repeat the border pixels) or "zeros". Random numbers come from ``generator`` (on the images' device) or torch's
    global generator.
    """
    if fill not in ("edge", "zeros"):
        raise ValueError(f"fill must be 'edge' or 'zeros', got {fill!r}")
    b, c, h, w = images.shape
    dy, dx = (max_shift, max_shift) if isinstance(max_shift, int) else max_shift
    if dy <= 0 and dx <= 0 and not hflip:
        return images
    device = images.device
    padded = F.pad(images, (dx, dx, dy, dy), mode="replicate" if fill == "edge" else "constant") \
        if dy > 0 or dx > 0 else images
    top = torch.randint(0, 2 * dy + 1, (b, 1, 1), device=device, generator=generator)
    left = torch.randint(0, 2 * dx + 1, (b, 1, 1), device=device, generator=generator)
    cols = torch.arange(w, device=device).view(1, 1, w)
    if hflip:  # a mirrored image reads its window right to left
        flip = torch.rand(b, device=device, generator=generator) < 0.5
        cols = torch.where(flip.view(b, 1, 1), w - 1 - cols, cols)
    # One gather from the flattened padded image does the shift and the flip together (several times faster on
    # CPU than advanced indexing with broadcast row/column indices).
    index = (top + torch.arange(h, device=device).view(1, h, 1)) * (w + 2 * dx) + left + cols
    out = padded.flatten(2).gather(2, index.view(b, 1, h * w).expand(b, c, h * w))
    return out.view(b, c, h, w)


class ImageClassificationDataModule(TensorSplitsDataModule):
    """Base of the image-classification DataModules: subclasses say where the uint8 images come from.

    ``load(train)`` returns ``(images uint8 [N, C, H, W], labels int64 [N])`` for the training or the test set, and
    ``classes`` the class names. The validation set is ``val_size`` images drawn from the training set by a
    permutation seeded with ``seed`` (the same split in every process and every run). ``mean``/``std``: per-channel
    normalisation after the conversion to [0, 1] (and to grayscale), one value per model input channel, or none.
    """

    def __init__(
        self,
        grayscale: bool = True,
        augment: bool = True,
        max_shift: float = 0.1,
        shift_fill: Literal["edge", "zeros"] = "edge",
        hflip: bool = True,
        mean: list[float] | None = None,
        std: list[float] | None = None,
        val_size: int = 5000,
        batch_size: int = 64,
        eval_batch_size: int = 1000,
        seed: int = 0,
    ):
        super().__init__(batch_size, eval_batch_size)
        if shift_fill not in ("edge", "zeros"):
            raise ValueError(f"shift_fill must be 'edge' or 'zeros', got {shift_fill!r}")
        if not 0 <= max_shift < 0.5:
            raise ValueError(f"max_shift is a fraction of the image size in [0, 0.5), got {max_shift}")
        if (mean is None) != (std is None):
            raise ValueError("give both mean and std (one value per input channel), or neither")
        channels = 1 if grayscale else 3
        for name, values in (("mean", mean), ("std", std)):
            if values is not None and len(values) != channels:
                raise ValueError(f"{name} needs {channels} value(s) for {'grayscale' if grayscale else 'colour'} "
                                 f"images, got {values}")
        if std is not None and min(std) <= 0:
            raise ValueError(f"std must be positive, got {std}")
        if val_size < 1:
            raise ValueError(f"val_size must be >= 1 (the best checkpoint is chosen on validation accuracy), "
                             f"got {val_size}")
        self.grayscale, self.augment, self.max_shift, self.shift_fill = grayscale, augment, max_shift, shift_fill
        self.hflip, self.mean, self.std = hflip, mean, std
        self.val_size, self.seed = val_size, seed
        self._splits: dict[str, TensorBatchDataset] = {}

    # -- what subclasses provide ---------------------------------------------------------------------------------
    def load(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    @property
    def classes(self) -> list[str]:
        raise NotImplementedError

    def image_size(self) -> tuple[int, int]:
        """(H, W) of the images."""
        raise NotImplementedError

    # -- what the model and the CLI see --------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_shape(self) -> list[int]:
        return [1 if self.grayscale else 3, *self.image_size()]

    def setup(self, stage: str) -> None:
        if stage in ("fit", "validate") and "train" not in self._splits:
            images, labels = self.load(train=True)
            if self.val_size >= len(images):
                raise DataFileError(f"val_size {self.val_size} leaves no training images (the training set has "
                                 f"{len(images)}); choose a smaller --data.init_args.val_size")
            order = torch.randperm(len(images), generator=torch.Generator().manual_seed(self.seed))
            train, val = order[: len(images) - self.val_size], order[len(images) - self.val_size:]
            self._splits["train"] = TensorBatchDataset(images[train], labels[train])
            self._splits["val"] = TensorBatchDataset(images[val], labels[val])
        if stage in ("test", "predict") and "test" not in self._splits:
            self._splits["test"] = TensorBatchDataset(*self.load(train=False))

    def dataset(self, split: str) -> TensorBatchDataset:
        """The uint8 images and labels of ``split`` ("train", "val" or "test")."""
        if split not in self._splits:
            self.setup("test" if split == "test" else "fit")
        return self._splits[split]

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        images, labels = batch
        trainer = self.trainer
        if trainer is None or not trainer.training:
            return self.prepare_images(images), labels
        # Augmentation draws from a generator seeded by (seed, step, rank): a resumed run augments exactly as an
        # uninterrupted one, and DDP ranks draw different shifts for their different images.
        seed = hash((self.seed, trainer.global_step, trainer.global_rank)) % 2**63
        generator = torch.Generator(device=images.device).manual_seed(seed)
        return self.prepare_images(images, train=True, generator=generator), labels

    def prepare_images(self, images: torch.Tensor, train: bool = False,
                       generator: torch.Generator | None = None) -> torch.Tensor:
        """uint8 [B, 3, H, W] (or [B, 1, H, W]) -> the float batch the model sees (augmented if ``train``)."""
        if self.grayscale:
            # The paper's grayscale: the plain average of R, G and B (its / 3 and the / 255 in one pass).
            x = images.float().sum(1, keepdim=True).div_(255 * images.shape[1])
        else:
            x = images.float().div_(255)
            if x.shape[1] == 1:
                x = x.expand(-1, 3, -1, -1)
        if train and self.augment:
            h, w = x.shape[-2:]
            x = shift_and_flip(x, (round(self.max_shift * h), round(self.max_shift * w)), self.shift_fill,
                               self.hflip, generator)
        if self.mean is not None:
            mean = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
            std = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
            x = (x - mean) / std
        return x


class CIFAR10DataModule(ImageClassificationDataModule):
    """CIFAR-10 from the official python archive, read with torchvision (which checks each batch file's md5).

    ``root`` holds ``cifar-10-python.tar.gz`` and/or its extracted ``cifar-10-batches-py/``. With
    ``download=True`` and neither there, the archive is fetched from ``url`` and kept only if its md5 is ``md5``
    (the published one). An archive that is present is md5-checked before it is extracted. The official training
    set (50,000) gives the training and validation images, the official test set (10,000) the test images.
    Under DDP the download happens once (``prepare_data`` runs on one process per node).
    """

    def __init__(
        self,
        root: str = "data/cifar10",
        download: bool = False,
        grayscale: bool = True,
        augment: bool = True,
        max_shift: float = 0.1,
        shift_fill: Literal["edge", "zeros"] = "edge",
        hflip: bool = True,
        mean: list[float] | None = None,
        std: list[float] | None = None,
        val_size: int = 5000,
        batch_size: int = 64,
        eval_batch_size: int = 1000,
        seed: int = 0,
        url: str = CIFAR10_URL,
        md5: str = CIFAR10_MD5,
    ):
        super().__init__(grayscale=grayscale, augment=augment, max_shift=max_shift, shift_fill=shift_fill,
                         hflip=hflip, mean=mean, std=std, val_size=val_size, batch_size=batch_size,
                         eval_batch_size=eval_batch_size, seed=seed)
        self.root, self.download, self.url, self.md5 = Path(root), download, url, md5

    @property
    def classes(self) -> list[str]:
        return ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

    def image_size(self) -> tuple[int, int]:
        return (32, 32)

    def prepare_data(self) -> None:
        if (self.root / "cifar-10-batches-py").is_dir():
            return
        archive = self.root / CIFAR10_ARCHIVE
        if not archive.is_file():
            if not self.download:
                raise DataNotFoundError(
                    f"CIFAR-10 is not in {self.root} (neither {CIFAR10_ARCHIVE} nor cifar-10-batches-py/). "
                    f"Download it with --data.init_args.download true (from {self.url}, md5-checked), or set "
                    "--data.init_args.root to the folder that holds it"
                )
            print(f"downloading {self.url} -> {archive}", file=sys.stderr)
            download(self.url, archive, "md5", self.md5)
        elif (digest := file_digest(archive, "md5")) != self.md5:
            raise DataFileError(
                f"{archive} is corrupted or not the official archive (md5 {digest}, expected {self.md5}). "
                "Delete it and download again (--data.init_args.download true)"
            )
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(self.root, filter="data")  # no absolute paths, links out of root or device files

    def load(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        from torchvision.datasets import CIFAR10

        self.prepare_data()  # a no-op once extracted; gives the clear error when the data is missing
        try:
            data = CIFAR10(str(self.root), train=train, download=False)
        except (RuntimeError, pickle.UnpicklingError, EOFError, KeyError) as err:
            raise DataFileError(
                f"the CIFAR-10 files in {self.root / 'cifar-10-batches-py'} are corrupted or incomplete ({err}). "
                "Delete that folder (and the archive) and download again with --data.init_args.download true"
            ) from err
        images = torch.from_numpy(data.data).permute(0, 3, 1, 2).contiguous()  # [N, 32, 32, 3] -> [N, 3, 32, 32]
        return images, torch.tensor(data.targets, dtype=torch.long)


class ImageFolderDataModule(ImageClassificationDataModule):
    """A dataset stored as ``root/<train_dir>/<class>/<image>`` and ``root/<test_dir>/<class>/<image>``.

    Classes are the sub-folder names in sorted order (as torchvision's ``ImageFolder``); the test folder must have
    the same classes. Every image is decoded once (torchvision.io, as RGB) into one uint8 tensor; all images must have
    the same size. The CIFAR-10 JPEG tree (``train/``, ``test/``) is one such dataset.
    """

    def __init__(
        self,
        root: str,
        train_dir: str = "train",
        test_dir: str = "test",
        grayscale: bool = True,
        augment: bool = True,
        max_shift: float = 0.1,
        shift_fill: Literal["edge", "zeros"] = "edge",
        hflip: bool = True,
        mean: list[float] | None = None,
        std: list[float] | None = None,
        val_size: int = 5000,
        batch_size: int = 64,
        eval_batch_size: int = 1000,
        seed: int = 0,
    ):
        super().__init__(grayscale=grayscale, augment=augment, max_shift=max_shift, shift_fill=shift_fill,
                         hflip=hflip, mean=mean, std=std, val_size=val_size, batch_size=batch_size,
                         eval_batch_size=eval_batch_size, seed=seed)
        self.root, self.train_dir, self.test_dir = Path(root), train_dir, test_dir
        for folder in (self.root / train_dir, self.root / test_dir):
            if not folder.is_dir():
                raise DataNotFoundError(
                    f"no folder {folder}. An image-folder dataset needs {self.root}/{train_dir}/<class>/<image> and "
                    f"{self.root}/{test_dir}/<class>/<image>; set --data.init_args.root (and train_dir / test_dir)"
                )
        self._classes: list[str] | None = None

    def _samples(self, folder: Path) -> tuple[list[str], list[tuple[str, int]]]:
        from torchvision.datasets.folder import find_classes, make_dataset

        try:
            classes, class_to_idx = find_classes(str(folder))
            return classes, make_dataset(str(folder), class_to_idx, extensions=IMAGE_EXTENSIONS)
        except (FileNotFoundError, RuntimeError) as err:  # no class folders, or a class folder without images
            raise DataFileError(f"{folder} is not a folder of class folders with images ({err}). Put each "
                                f"class's images ({', '.join(IMAGE_EXTENSIONS)}) in {folder}/<class>/") from err

    @property
    def classes(self) -> list[str]:
        if self._classes is None:
            self._classes = self._samples(self.root / self.train_dir)[0]
        return self._classes

    def image_size(self) -> tuple[int, int]:
        return tuple(_decode(self._samples(self.root / self.train_dir)[1][0][0]).shape[1:])

    def load(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        folder = self.root / (self.train_dir if train else self.test_dir)
        classes, samples = self._samples(folder)
        if classes != self.classes:
            raise DataFileError(f"{folder} has classes {classes} but {self.root / self.train_dir} has "
                                f"{self.classes}; both need the same class folders")
        first = _decode(samples[0][0])
        images = torch.empty((len(samples), *first.shape), dtype=torch.uint8)
        for i, (path, _) in enumerate(tqdm(samples, desc=f"decoding {folder}", unit="img", leave=False)):
            image = _decode(path)
            if image.shape != first.shape:
                raise DataFileError(
                    f"{path} is {list(image.shape[1:])} pixels but {samples[0][0]} is {list(first.shape[1:])}; "
                    "all images must have the same size: resize them first"
                )
            images[i] = image
        return images, torch.tensor([label for _, label in samples], dtype=torch.long)


def _decode(path: str) -> torch.Tensor:
    """One image file as a ``[3, H, W]`` uint8 tensor; a file that cannot be decoded is named."""
    from torchvision.io import ImageReadMode, decode_image

    try:
        return decode_image(path, mode=ImageReadMode.RGB)
    except RuntimeError as err:
        raise DataFileError(f"cannot decode {path} ({err}); remove or replace the file") from err
