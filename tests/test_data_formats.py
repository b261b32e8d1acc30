"""On-disk formats built tiny in tmp_path and read through the real loaders, plus error paths."""

from __future__ import annotations

import pickle
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sslbench.data import iterate_batches, load_dataset
from sslbench.data.folder import imagenet100_classes
from sslbench.errors import ConfigError, DataError


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and msg, msg
    return msg


def _dump(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f)


# ----------------------------------------------------------------------------------------------
# CIFAR
# ----------------------------------------------------------------------------------------------


@pytest.fixture()
def cifar10_root(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    written = {"train": ([], []), "test": ([], [])}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (4, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, 4).tolist()
        # Real files are python-2 pickles: byte keys when not decoded; cover both spellings.
        key = (lambda k: k.encode()) if name.endswith("1") else (lambda k: k)
        _dump(folder / name, {key("data"): data, key("labels"): labels})
        split = "test" if name == "test_batch" else "train"
        written[split][0].append(data)
        written[split][1].extend(labels)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
             "truck"]
    _dump(folder / "batches.meta", {"label_names": names})
    return tmp_path, written, names


def test_cifar10_reads_pickled_batches(cifar10_root):
    root, written, names = cifar10_root
    for split in ("train", "test"):
        ds = load_dataset("cifar10", split, root)
        expected = np.concatenate(written[split][0])
        assert ds.in_memory and ds.images.dtype == torch.uint8
        assert ds.images.shape == (expected.shape[0], 3, 32, 32)
        # Row-major R, G, B planes: pixel (c, y, x) is data[c * 1024 + y * 32 + x].
        assert ds.images[1, 2, 5, 7] == expected[1, 2 * 1024 + 5 * 32 + 7]
        assert torch.equal(ds.images.reshape(len(ds), -1), torch.from_numpy(expected))
        assert ds.labels.tolist() == written[split][1]
        assert ds.class_names == names and ds.num_classes == 10
    assert len(load_dataset("cifar10", "pretrain", root)) == 20
    # The batches folder itself is accepted as the root.
    assert len(load_dataset("cifar10", "test", root / "cifar-10-batches-py")) == 4


def test_cifar100_reads_fine_labels(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rng = np.random.default_rng(1)
    data = {s: rng.integers(0, 256, (n, 3072), dtype=np.uint8)
            for s, n in (("train", 6), ("test", 3))}
    fine = {s: rng.integers(0, 100, len(d)).tolist() for s, d in data.items()}
    for s in data:
        _dump(folder / s, {"data": data[s], "fine_labels": fine[s],
                           "coarse_labels": [0] * len(data[s])})
    _dump(folder / "meta", {"fine_label_names": [f"c{i}" for i in range(100)],
                            "coarse_label_names": [f"s{i}" for i in range(20)]})
    ds = load_dataset("cifar100", "test", tmp_path)
    assert torch.equal(ds.images.reshape(3, -1), torch.from_numpy(data["test"]))
    assert ds.labels.tolist() == fine["test"] and ds.num_classes == 100


def test_cifar_missing_root_split_and_corrupt_file(cifar10_root, tmp_path):
    root, _, _ = cifar10_root
    with pytest.raises(DataError) as e:
        load_dataset("cifar10", "train")
    assert "--data-root" in _one_line(e)
    with pytest.raises(DataError) as e:
        load_dataset("cifar10", "train", tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in _one_line(e)
    (root / "cifar-10-batches-py" / "test_batch").unlink()
    with pytest.raises(DataError) as e:
        load_dataset("cifar10", "test", root)
    assert str(root / "cifar-10-batches-py" / "test_batch") in _one_line(e)
    assert len(load_dataset("cifar10", "train", root)) == 20  # other split unaffected
    (root / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(DataError) as e:
        load_dataset("cifar10", "train", root)
    assert "data_batch_3" in _one_line(e) and "corrupt" in str(e.value)


def test_cifar_download_failure_is_one_line(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    def offline(*args, **kwargs):
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(tvd, "CIFAR10", offline)
    with pytest.raises(DataError) as e:
        load_dataset("cifar10", "train", tmp_path / "dl", download=True)
    msg = _one_line(e)
    assert "could not download CIFAR-10" in msg and "unreachable" in msg


# ----------------------------------------------------------------------------------------------
# STL-10
# ----------------------------------------------------------------------------------------------


@pytest.fixture()
def stl_root(tmp_path):
    rng = np.random.default_rng(2)
    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    arrays = {}
    for part, n in (("train", 3), ("test", 2), ("unlabeled", 4)):
        x = rng.integers(0, 256, (n, 3, 96, 96), dtype=np.uint8)
        # Each channel is stored column-major (x fastest is *not* the order on disk).
        on_disk = np.ascontiguousarray(x.transpose(0, 1, 3, 2))
        (folder / f"{part}_X.bin").write_bytes(on_disk.tobytes())
        arrays[part] = x
        if part != "unlabeled":
            y = rng.integers(1, 11, n).astype(np.uint8)
            (folder / f"{part}_y.bin").write_bytes(y.tobytes())
            arrays[part + "_y"] = y.astype(np.int64) - 1
    (folder / "class_names.txt").write_text("\n".join(f"name{i}" for i in range(10)) + "\n")
    return tmp_path, arrays


def test_stl10_column_major_images_and_splits(stl_root):
    root, a = stl_root
    train = load_dataset("stl10", "train", root)
    assert torch.equal(train.images, torch.from_numpy(a["train"]))
    assert train.labels.tolist() == a["train_y"].tolist() and train.class_names[3] == "name3"
    test = load_dataset("stl10", "test", root)
    assert torch.equal(test.images, torch.from_numpy(a["test"]))
    pre = load_dataset("stl10", "pretrain", root)
    assert pre.split == "train+unlabeled" and len(pre) == 7
    assert torch.equal(pre.images[:4], torch.from_numpy(a["unlabeled"]))
    assert torch.equal(pre.images[4:], torch.from_numpy(a["train"]))
    assert pre.labels[:4].tolist() == [-1] * 4 and pre.labels[4:].tolist() == a["train_y"].tolist()
    assert load_dataset("stl10", "unlabeled", root).labels.tolist() == [-1] * 4


def test_stl10_errors(stl_root):
    root, _ = stl_root
    folder = root / "stl10_binary"
    (folder / "unlabeled_X.bin").unlink()
    with pytest.raises(DataError) as e:
        load_dataset("stl10", "pretrain", root)
    assert str(folder / "unlabeled_X.bin") in _one_line(e)
    (folder / "test_X.bin").write_bytes(b"\x01" * 1000)
    with pytest.raises(DataError) as e:
        load_dataset("stl10", "test", root)
    assert "test_X.bin" in _one_line(e) and "27648" in str(e.value)
    (folder / "train_y.bin").write_bytes(bytes([1, 2]))  # 3 images, 2 labels
    with pytest.raises(DataError) as e:
        load_dataset("stl10", "train", root)
    assert "train_y.bin" in _one_line(e)


# ----------------------------------------------------------------------------------------------
# Image folders and ImageNet-100
# ----------------------------------------------------------------------------------------------


def _save(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


@pytest.fixture()
def folder_root(tmp_path):
    rng = np.random.default_rng(3)
    truth = {}
    for split in ("train", "val"):
        for cls in ("cat", "dog"):
            for k, (h, w, ext) in enumerate([(16, 32, "png"), (40, 30, "jpg")]):
                arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
                path = tmp_path / split / cls / f"img{k}.{ext}"
                _save(path, arr)
                truth[str(path)] = arr
    return tmp_path, truth


def test_image_folder_decodes_to_fixed_size(folder_root):
    root, truth = folder_root
    ds = load_dataset("imagefolder", "train", root, image_size=16)
    assert not ds.in_memory and ds.class_names == ["cat", "dog"] and len(ds) == 4
    assert ds.labels.tolist() == [0, 0, 1, 1]
    png = ds.paths.index(str(root / "train" / "cat" / "img0.png"))
    img, label = ds[png]
    assert img.dtype == torch.uint8 and img.shape == (3, 16, 16) and label == 0
    # 16x32 PNG: no resize needed, the centre 16 columns are kept, lossless.
    expected = truth[ds.paths[png]][:, 8:24].transpose(2, 0, 1)
    assert torch.equal(img, torch.from_numpy(np.ascontiguousarray(expected)))
    val = load_dataset("imagefolder", "test", root, image_size=16)
    assert val.split == "test" and val.class_names == ds.class_names and len(val) == 4
    for workers in (0, 2):
        batches = list(iterate_batches(val, 3, shuffle=False, drop_last=False, num_workers=workers))
        images = torch.cat([b[0] for b in batches])
        assert images.shape == (4, 3, 16, 16)
        assert torch.equal(images, torch.stack([val[i][0] for i in range(4)]))
        assert torch.cat([b[1] for b in batches]).tolist() == val.labels.tolist()
    mem = load_dataset("imagefolder", "val", root, image_size=16, in_memory=True, num_workers=0)
    assert mem.in_memory and torch.equal(mem.images, images)


@pytest.mark.parametrize("workers", [0, 2])
def test_corrupt_image_is_one_line_naming_the_file(folder_root, workers):
    root, _ = folder_root
    ds = load_dataset("imagefolder", "train", root, image_size=16)
    bad = root / "train" / "dog" / "img1.jpg"  # broken after loading (which checks headers)
    bad.write_bytes(b"this is not a jpeg" * 20)
    with pytest.raises(DataError) as e:
        list(iterate_batches(ds, 2, shuffle=False, drop_last=False, num_workers=workers))
    assert str(bad) in _one_line(e) and "unreadable image" in str(e.value)


def test_image_folder_layout_errors(folder_root, tmp_path_factory):
    root, _ = folder_root
    with pytest.raises(DataError) as e:
        load_dataset("imagefolder", "train", root / "missing")
    assert str(root / "missing") in _one_line(e)
    empty = tmp_path_factory.mktemp("only_train")
    _save(empty / "train" / "a" / "x.png", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(DataError) as e:
        load_dataset("imagefolder", "test", empty)
    assert str(empty / "val") in _one_line(e)
    _save(root / "val" / "stray.png", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(DataError) as e:
        load_dataset("imagefolder", "test", root)
    assert "stray.png" in _one_line(e)
    (root / "val" / "stray.png").unlink()
    _save(root / "val" / "zebra" / "z.png", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(DataError) as e:
        load_dataset("imagefolder", "test", root)
    assert "zebra" in _one_line(e)
    with pytest.raises(ConfigError):
        load_dataset("imagefolder", "train", root, classes="imagenet1k")
    with pytest.raises(ConfigError):
        load_dataset("imagefolder", "train", root, download=True)


def test_imagenet100_class_list_is_package_data():
    classes = imagenet100_classes()
    assert len(classes) == 100 == len(set(classes))
    assert all(len(c) == 9 and c[0] == "n" and c[1:].isdigit() for c in classes)
    assert classes[0] == "n02869837" and classes[-1] == "n02090622"  # CMC list order


def test_imagenet100_selects_the_subset(tmp_path):
    synsets = imagenet100_classes()
    tiny = np.full((8, 8, 3), 7, np.uint8)
    for s in synsets:
        _save(tmp_path / "train" / s / "a.png", tiny)
    _save(tmp_path / "train" / "n99999999" / "a.png", tiny)  # not in the list: excluded
    for s in synsets[:3] + ["n99999999"]:
        _save(tmp_path / "val" / s / "b.png", tiny)
    ds = load_dataset("imagenet100", "train", tmp_path, image_size=8)
    assert ds.num_classes == 100 and len(ds) == 100 and ds.class_names == sorted(synsets)
    assert sorted(ds.labels.tolist()) == list(range(100))
    assert not any("n99999999" in p for p in ds.paths)
    val = load_dataset("imagefolder", "test", tmp_path, classes="imagenet100", image_size=8)
    assert len(val) == 3 and val.num_classes == 100
    assert [val.class_names[i] for i in val.labels.tolist()] == sorted(synsets[:3])


def test_imagenet100_missing_synsets(tmp_path):
    synsets = imagenet100_classes()
    tiny = np.zeros((8, 8, 3), np.uint8)
    for s in synsets[:5] + ["n99999999"]:
        _save(tmp_path / "train" / s / "a.png", tiny)
    with pytest.raises(DataError) as e:
        load_dataset("imagenet100", "train", tmp_path)
    assert "95 of the 100" in _one_line(e) and str(tmp_path / "train") in str(e.value)
    ds = load_dataset("imagenet100", "train", tmp_path, allow_missing_classes=True)
    assert len(ds) == 5 and ds.num_classes == 100
    assert sorted(ds.class_names[i] for i in ds.labels.tolist()) == sorted(synsets[:5])
