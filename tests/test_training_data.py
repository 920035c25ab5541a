"""CIFAR-100 python-format reader, synthetic writer, dataset and samplers."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

from reference_models.training.data import (
    CIFAR100_MEAN,
    CIFAR100_STD,
    Cifar100Dataset,
    DataError,
    ShardedBatchSampler,
    load_cifar100,
    safe_unpickle,
    write_synthetic_cifar100,
)


@pytest.fixture(scope="module")
def cifar_dir(tmp_path_factory: pytest.TempPathFactory):
    return write_synthetic_cifar100(tmp_path_factory.mktemp("cifar") / "cifar-100-python", 120, 30, seed=3)


def _raw(path):
    with open(path, "rb") as fh:
        return pickle.load(fh, encoding="bytes")


def test_synthetic_files_have_the_official_layout(cifar_dir):
    train = _raw(cifar_dir / "train")
    meta = _raw(cifar_dir / "meta")
    assert {b"data", b"fine_labels", b"coarse_labels", b"filenames"} <= set(train)
    assert train[b"data"].dtype == np.uint8 and train[b"data"].shape == (120, 3072)
    assert len(meta[b"fine_label_names"]) == 100 and len(meta[b"coarse_label_names"]) == 20
    # 120 labels cycle through the 100 classes before shuffling: 20 classes twice, 80 once
    counts = np.bincount(train[b"fine_labels"], minlength=100)
    assert sorted(counts.tolist()) == [1] * 80 + [2] * 20
    # coarse label = fine // 5 in the synthetic data
    assert all(c == f // 5 for f, c in zip(train[b"fine_labels"], train[b"coarse_labels"], strict=True))


def test_reader_round_trips_the_synthetic_format(cifar_dir):
    raw = _raw(cifar_dir / "test")
    split = load_cifar100(cifar_dir, "test")
    assert len(split) == 30
    assert split.images.shape == (30, 3, 32, 32) and split.images.dtype == torch.uint8
    assert torch.equal(split.images.reshape(30, 3072), torch.from_numpy(raw[b"data"]))
    assert split.fine_labels.tolist() == raw[b"fine_labels"]
    assert split.coarse_labels.tolist() == raw[b"coarse_labels"]
    assert split.filenames == [f.decode() for f in raw[b"filenames"]]
    assert split.fine_label_names[:2] == ["class_000", "class_001"]
    # the parent folder works too (cifar-100-python/ inside it)
    assert torch.equal(load_cifar100(cifar_dir.parent, "test").images, split.images)


def test_synthetic_data_is_reproducible(tmp_path):
    a = write_synthetic_cifar100(tmp_path / "a", 10, 5, seed=1)
    b = write_synthetic_cifar100(tmp_path / "b", 10, 5, seed=1)
    assert (a / "train").read_bytes() == (b / "train").read_bytes()


def test_corrupt_file_gives_a_one_line_error(cifar_dir, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in ("train", "test", "meta"):
        (bad / name).write_bytes((cifar_dir / name).read_bytes())
    (bad / "train").write_bytes((cifar_dir / "train").read_bytes()[:500])  # truncated
    with pytest.raises(DataError) as exc:
        load_cifar100(bad, "train")
    message = str(exc.value)
    assert "\n" not in message and str(bad / "train") in message and "corrupt" in message


def test_hostile_pickle_is_refused_without_running_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    payload = pickle.dumps({b"data": Evil()}, protocol=2)
    with pytest.raises(pickle.UnpicklingError, match=r"forbidden global (__builtin__|builtins)\.print"):
        safe_unpickle(payload)
    folder = tmp_path / "evil"
    folder.mkdir()
    (folder / "meta").write_bytes(payload)
    (folder / "train").write_bytes(payload)
    with pytest.raises(DataError, match="forbidden global"):
        load_cifar100(folder)


def test_missing_and_malformed_inputs(tmp_path, cifar_dir):
    with pytest.raises(DataError, match="no such directory"):
        load_cifar100(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no CIFAR-100"):
        load_cifar100(tmp_path / "empty")
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    (wrong / "meta").write_bytes((cifar_dir / "meta").read_bytes())
    (wrong / "train").write_bytes(pickle.dumps({b"data": np.zeros((2, 10), np.uint8), b"fine_labels": [0, 1],
                                                b"coarse_labels": [0, 0]}, protocol=2))
    with pytest.raises(DataError, match=r"shape \(N, 3072\)"):
        load_cifar100(wrong)
    with pytest.raises(DataError, match="no such file"):
        load_cifar100(wrong, "test")


def test_dataset_normalises_with_the_cifar100_statistics():
    images = torch.tensor([[[[0]], [[255]], [[51]]]], dtype=torch.uint8)  # one 1x1 image
    ds = Cifar100Dataset(images, torch.tensor([7]))
    x, y = ds[0]
    expected = [(0 - CIFAR100_MEAN[0]) / CIFAR100_STD[0], (1 - CIFAR100_MEAN[1]) / CIFAR100_STD[1],
                (0.2 - CIFAR100_MEAN[2]) / CIFAR100_STD[2]]
    assert y == 7
    assert x.flatten().tolist() == pytest.approx(expected, rel=1e-6)
    raw = Cifar100Dataset(images, torch.tensor([7]), normalize=False)
    assert raw[0][0].flatten().tolist() == pytest.approx([0.0, 1.0, 0.2])


def test_dataset_works_with_distributed_sampler(cifar_dir):
    ds = Cifar100Dataset.from_split(load_cifar100(cifar_dir, "test"))
    shards = []
    for rank in (0, 1):
        sampler = DistributedSampler(ds, num_replicas=2, rank=rank, shuffle=True, seed=0)
        batches = list(DataLoader(ds, batch_size=4, sampler=sampler))
        assert batches[0][0].shape == (4, 3, 32, 32) and batches[0][1].dtype == torch.int64
        assert sum(len(b[1]) for b in batches) == 15
        shards.append(set(iter(sampler)))
    assert not shards[0] & shards[1] and len(shards[0] | shards[1]) == 30


def test_sharded_batches_reassemble_the_global_batch():
    one = ShardedBatchSampler(20, 8, rank=0, world_size=1, seed=5)
    two = [ShardedBatchSampler(20, 8, rank=r, world_size=2, seed=5) for r in (0, 1)]
    for s in (one, *two):
        s.set_epoch(3)
    assert len(one) == 2  # 20 // 8 full global batches
    for g, (a, b) in zip(one, zip(*two, strict=True), strict=True):
        assert len(a) == len(b) == 4 and a + b == g
    with pytest.raises(ValueError):
        ShardedBatchSampler(20, 7, rank=0, world_size=2)
