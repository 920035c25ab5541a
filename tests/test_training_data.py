"""CIFAR-100 python-format reader, synthetic writer, dataset and samplers."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

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


# --------------------------------------------------------------------------- hostile pickles (issue 7)
# Hand-assembled protocol-2 opcodes: each file is a few hundred bytes.


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _str(text: str) -> bytes:
    raw = text.encode("utf-8")
    return b"X" + len(raw).to_bytes(4, "little") + raw


def _int(n: int) -> bytes:
    return b"J" + n.to_bytes(4, "little", signed=True)


def _latin1(text: str) -> bytes:  # _codecs.encode(text, "latin1"): how numpy pickles bytes in protocol 2
    return _global("_codecs", "encode") + _str(text) + _str("latin1") + b"\x86R"


def _dtype(code: str, flags: int = 0) -> bytes:
    return (_global("numpy", "dtype") + _str(code) + b"\x89\x88\x87R"
            + b"(K\x03" + _str("|") + b"NNN" + _int(-1) + _int(-1) + _int(flags) + b"tb")


def _array(shape: bytes, dtype: bytes, raw: bytes) -> bytes:
    empty = _global("numpy._core.multiarray", "_reconstruct") + _global("numpy", "ndarray") + b"K\x00\x85"
    return empty + _latin1("b") + b"\x87R(K\x01" + shape + dtype + b"\x89" + raw + b"tb"


def _cifar(data: bytes) -> bytes:
    return (b"\x80\x02}" + _latin1("data") + data + b"s" + _latin1("fine_labels") + b"]s"
            + _latin1("coarse_labels") + b"]s.")


_BIG = _int(700000) + _int(3072) + b"\x86"
_HEX_BOMB = _latin1("ab")
for _ in range(28):  # each hex encoding doubles: 2 bytes become 512 MiB
    _HEX_BOMB = _global("_codecs", "encode") + _HEX_BOMB + _str("hex") + b"\x86R"

HOSTILE = {
    # _reconstruct's placeholder shape is allocated as given
    "reconstruct_shape": _cifar(_global("numpy._core.multiarray", "_reconstruct") + _global("numpy", "ndarray")
                                + _BIG + _str("B") + b"\x87R"),
    # numpy.ndarray is resolvable, so REDUCE calls it with any shape
    "ndarray_call": _cifar(_global("numpy", "ndarray") + _BIG + _str("u1") + b"\x86R"),
    # an object array's state allocates every element before reading the (empty) list: numpy crashes
    "object_dtype": _cifar(_array(_int(70000) + _int(3072) + b"\x86", _dtype("O8", 63), b"]")),
    "state_too_short": _cifar(_array(_BIG, _dtype("u1"), _latin1("abc"))),
    "hex_bomb": _cifar(_HEX_BOMB),
    # one 512 KiB buffer (in the memo) shared by 160 arrays: the reader copies each array's data, so
    # without the byte budget this would be 80 MiB from a 512 KiB file
    "shared_buffer": _cifar(b"(" + _array(_int(512 * 1024) + b"\x85", _dtype("u1"), _latin1("\x01" * 512 * 1024)
                                          + b"q\xff") + b"\x85"
                            + (_array(_int(512 * 1024) + b"\x85", _dtype("u1"), b"h\xff") + b"\x85") * 159 + b"l"),
}

_PROBE = """
import json, resource, sys
from reference_models.training.data import DataError, load_cifar100
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    load_cifar100(sys.argv[1], "train")
    error = None
except DataError as exc:
    error = str(exc)
print(json.dumps({"grew_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before, "error": error}))
"""


def _hostile_dir(root: Path, cifar_dir: Path, train: bytes) -> Path:
    folder = root / "cifar"
    folder.mkdir(parents=True)
    (folder / "meta").write_bytes((cifar_dir / "meta").read_bytes())
    (folder / "train").write_bytes(train)
    (folder / "test").write_bytes(train)
    return folder


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_hostile_headers_are_refused_before_allocating(tmp_path, cifar_dir, kind):
    """A small file claiming a huge array is one DataError line, and the process's peak memory barely moves."""
    folder = _hostile_dir(tmp_path, cifar_dir, HOSTILE[kind])
    assert (folder / "train").stat().st_size < 600_000
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", _PROBE, str(folder)], capture_output=True, text=True,
                          timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-500:]
    result = json.loads(proc.stdout)
    assert result["error"] and "\n" not in result["error"] and str(folder / "train") in result["error"]
    assert result["grew_kib"] < 48 * 1024, result


def test_legitimate_pickles_of_other_numeric_dtypes_still_read():
    arrays = {b"f": np.arange(6, dtype=">f4").reshape(2, 3), b"i": np.asfortranarray(np.ones((3, 2), np.int16)),
              b"e": np.zeros((0, 3072), np.uint8), b"l": [b"", (np.arange(2),)]}
    out = safe_unpickle(pickle.dumps(arrays, protocol=2))
    for key in (b"f", b"i", b"e"):
        assert out[key].dtype == arrays[key].dtype and np.array_equal(out[key], arrays[key])
        assert type(out[key]) is np.ndarray and out[key].flags.writeable
    assert out[b"i"].flags.f_contiguous
    assert out[b"l"][0] == b"" and np.array_equal(out[b"l"][1][0], np.arange(2))
    with pytest.raises(pickle.UnpicklingError):  # bytes() only as the empty bytes: bytes(n) allocates n
        safe_unpickle(b"\x80\x02c__builtin__\nbytes\nJ\x00\x00\x00\x40\x85R.")


def _reduce_payload(marker: Path) -> bytes:
    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    return pickle.dumps({b"data": Payload(), b"fine_labels": [], b"coarse_labels": []}, protocol=2)


def _one_error_line(err: str, prog: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error:") and "Traceback" not in err, err
    return lines[0]


def test_reduce_payload_runs_nothing_in_micronet_train(tmp_path, capsys):
    from reference_models.training.cli import main

    marker = tmp_path / "marker"
    folder = tmp_path / "cifar"
    folder.mkdir()
    for name in ("train", "test", "meta"):
        (folder / name).write_bytes(_reduce_payload(marker))
    code = main(["osi_ai", "--data", str(folder), "--out", str(tmp_path / "out"), "--no-progress"])
    line = _one_error_line(capsys.readouterr().err, "micronet-train")
    assert code == 2 and "forbidden global" in line and not marker.exists()
    assert not (tmp_path / "out").exists()  # refused before the output folder was made


def test_reduce_payload_runs_nothing_in_measure_exits(tmp_path, cifar_dir, capsys):
    from scorer.cli import main

    marker = tmp_path / "marker"
    folder = _hostile_dir(tmp_path, cifar_dir, _reduce_payload(marker))
    code = main(["reference:osi_ai", "--measure-exits", str(folder)])
    out, err = capsys.readouterr()
    line = _one_error_line(err, "micronet-score")
    assert code == 2 and "forbidden global" in line and not marker.exists() and out == ""


@pytest.mark.parametrize("kind", ["state_too_short", "object_dtype", "hex_bomb"])
def test_malformed_pickle_is_one_line_exit_2_in_micronet_train(tmp_path, cifar_dir, capsys, kind):
    from reference_models.training.cli import main

    folder = _hostile_dir(tmp_path, cifar_dir, HOSTILE[kind])
    code = main(["osi_ai", "--data", str(folder), "--out", str(tmp_path / "out"), "--no-progress"])
    line = _one_error_line(capsys.readouterr().err, "micronet-train")
    assert code == 2 and "corrupt or unsupported" in line
