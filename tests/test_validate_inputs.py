"""Validate before writing: every input mistake below is refused as ONE ``error:`` line on stderr,
exit code 1, no traceback, no run in the store and no run folder.

Each case was observed failing otherwise (a traceback, a failed run left in the store, or a
silent misreading). Each kind of input that used to print a traceback (a non-finite number, a seed
out of range, a sweep file that is not UTF-8, a batch larger than the data, a corrupt image, a
model larger than memory) runs the real ``python -m sslbench`` in a subprocess at least once, as a
user types it; the other cases run in-process through Typer (the same code, without the ~3-5 s
of interpreter start and imports; a traceback there raises in the test).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import TINY_TRAIN, run_cli
from tests.test_sweep_e2e import TINY as TINY_SWEEP  # 2 cells, 128 shapes images, batch 64


def _train(*changes: str) -> list[str]:
    """TINY_TRAIN with some options given again (the last occurrence wins)."""
    return ["train", *TINY_TRAIN, "--device", "cpu", *changes]


def _assert_nothing_written(cli, home: Path) -> None:
    store = home / "db" / "sslbench.sqlite"
    if store.exists():
        listed = cli("runs", "list", "--format", "json")
        assert listed.exit_code == 0, listed.output
        assert json.loads(listed.stdout) == []
    runs = home / "runs"
    assert not runs.exists() or not any(runs.iterdir()), list(runs.iterdir())


def _assert_refused(cli, home: Path, code: int, stdout: str, stderr: str, *needles: str) -> str:
    assert "Traceback" not in stdout + stderr, stderr
    assert code == 1, (code, stdout, stderr)
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    _assert_nothing_written(cli, home)
    return lines[0]


def _refused_subprocess(cli, home: Path, args: list[str], *needles: str) -> str:
    proc = run_cli(args, home, timeout=120)
    return _assert_refused(cli, home, proc.returncode, proc.stdout, proc.stderr, *needles)


def _refused_in_process(cli, home: Path, args: list[str], *needles: str) -> str:
    result = cli(*args)
    return _assert_refused(cli, home, result.exit_code, result.stdout, result.stderr, *needles)


def _sweep_file(home: Path, text: str | bytes, name: str = "bad.toml") -> Path:
    path = home / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def _image_folder(root: Path) -> Path:
    """A real ImageNet-layout folder: 2 classes x 4 8x8 JPEGs in train/ and val/."""
    from PIL import Image

    for split in ("train", "val"):
        for cls in ("ant", "bee"):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(4):
                Image.new("RGB", (8, 8), (40 * i, 90, 200)).save(folder / f"{i}.jpg")
    return root


def _folder_train(root: Path) -> list[str]:
    return ["train", "--dataset", "imagefolder", "--data-root", str(root), "--backbone", "tiny",
            "--projector", "16-d", "--dim", "8", "--epochs", "1", "--batch-size", "4",
            "--device", "cpu", "--quiet"]


# ------------------------------------------------------------------ used to print a traceback

@pytest.mark.slow
@pytest.mark.parametrize("args, needle", [
    (_train("--weight-decay", "nan"), "--weight-decay must be a finite number, got nan"),
    (_train("--seed", "-5"), "--seed must be an integer in 0 .. 2**63-1"),
], ids=["weight-decay-nan", "seed-negative"])
def test_bad_numbers_through_the_real_cli(cli, home, args, needle):
    _refused_subprocess(cli, home, args, needle)


@pytest.mark.parametrize("args, needle", [
    (_train("--seed", "99999999999999999999"), "--seed must be an integer in 0 .. 2**63-1"),
    (["eval", "--random-init", "--seed", "-5", "--device", "cpu"],
     "--seed must be an integer in 0 .. 2**63-1"),
], ids=["seed-overflow", "eval-seed-negative"])
def test_bad_numbers_that_printed_a_traceback_in_process(cli, home, args, needle):
    _refused_in_process(cli, home, args, needle)


def test_nan_in_a_sweep_file(cli, home):
    path = _sweep_file(home, TINY_SWEEP.replace("seed = [0, 1]", "weight_decay = [nan]"))
    _refused_in_process(cli, home, ["sweep", str(path)], str(path),
                        "weight_decay must be a finite number, got nan")


@pytest.mark.slow
def test_sweep_file_that_is_not_utf8(cli, home):
    path = _sweep_file(home, b'name = "caf\xe9"\n' + TINY_SWEEP.encode())
    _refused_subprocess(cli, home, ["sweep", str(path)], str(path), "byte 0xe9",
                        "save the sweep file as UTF-8 TOML")


@pytest.mark.slow
def test_batch_larger_than_the_training_images(cli, home):
    """Found inside the training loop before, after the run row and folder existed. Refused
    by ``check_train``, which ``pretrain`` calls right after loading the data."""
    _refused_subprocess(cli, home, _train("--batch-size", "512"),
                        "--batch-size 512 is larger than the 256 training images",
                        "lower --batch-size to 256 or less")


@pytest.mark.slow
def test_corrupt_jpeg_in_an_image_folder(cli, home, tmp_path_factory):
    root = _image_folder(tmp_path_factory.mktemp("images"))
    (root / "train" / "bee" / "1.jpg").write_bytes(b"\xff\xd8\xff\xe0 garbage, no header" * 3)
    (root / "val" / "ant" / "2.jpg").write_bytes(b"")  # later in the scan: not the one named
    line = _refused_subprocess(cli, home, _folder_train(root),
                               f"unreadable image {root / 'train' / 'bee' / '1.jpg'}",
                               "remove or replace the file")
    assert "2.jpg" not in line


@pytest.mark.slow
def test_model_larger_than_memory_on_cpu(cli, home):
    import torch

    from sslbench.train.preflight import device_memory, estimate_memory
    from sslbench.train.setup import resolve_train_config

    args = _train("--dim", "10000000", "--projector", "2048-d")
    cfg = resolve_train_config(dict(dim=10_000_000, projector="2048-d", batch_size=64))
    available = device_memory(torch.device("cpu"))
    if available is None or available > estimate_memory(cfg, torch.device("cpu")).total:
        pytest.skip("this machine's free memory cannot be read, or holds the model")
    _refused_subprocess(cli, home, args, "not enough memory on cpu", "GiB is available",
                        "lower --dim, --batch-size or the --projector widths")


# ------------------------------------------------------------------ silently accepted, or cheap

@pytest.mark.parametrize("args, needle", [
    (_train("--weight-decay", "inf"), "--weight-decay must be a finite number, got inf"),
    (_train("--lr", "-inf"), "--lr must be a finite number, got -inf"),
    (_train("--temperature", "nan"), "--temperature must be a finite number, got nan"),
    (_train("--probe-lr", "nan"), "--probe-lr must be a finite number, got nan"),
    (_train("--image-size", "0"), "--image-size must be positive, got 0"),
    (_train("--num-workers", "-1"), "--num-workers must be >= 0, got -1"),
    (_train("--train-samples", "100000"),
     "--train-samples 100000 is more than the 5000 training images of shapes"),
    (_train("--train-samples", "0", "--batch-size", "8192"),
     "--batch-size 8192 is larger than the 5000 training images of shapes"),
    (["eval", "--random-init", "--lr", "nan"], "--lr must be a finite number, got nan"),
    (["eval", "--random-init", "--seed", "9223372036854775808"],
     "--seed must be an integer in 0 .. 2**63-1"),
    (["bench", "report", "--configs", "0"], "--configs must be positive, got 0"),
    (["bench", "store", "--configs", "-3"], "--configs must be positive, got -3"),
], ids=["weight-decay-inf", "lr-inf", "temperature-nan", "probe-lr-nan", "image-size-0",
        "num-workers-negative", "train-samples-too-many", "batch-larger-than-dataset",
        "eval-lr-nan", "eval-seed-overflow", "bench-report-configs-0",
        "bench-store-configs-negative"])
def test_bad_options_in_process(cli, home, args, needle):
    _refused_in_process(cli, home, args, needle)


@pytest.mark.parametrize("old, new, needle", [
    ("seed = [0, 1]", "seed = [-5]", "--seed must be an integer in 0 .. 2**63-1"),
    ("seed = [0, 1]", "seed = [99999999999999999999]", "is too large"),
    ("seed = [0, 1]", "temperature = [inf]", "temperature must be a finite number, got inf"),
    ("linear_epochs = 5", "lr = nan", "[eval]: lr must be a finite number, got nan"),
    ("batch_size = 64", "batch_size = 512", "--batch-size 512 is larger than the 128 training"),
    ("train_samples = 128", "train_samples = 100000", "--train-samples 100000 is more than"),
], ids=["seed-negative", "seed-overflow", "temperature-inf", "eval-lr-nan", "batch-too-large",
        "train-samples-too-many"])
def test_bad_sweep_files_queue_nothing(cli, home, old, new, needle):
    path = _sweep_file(home, TINY_SWEEP.replace(old, new))
    _refused_in_process(cli, home, ["sweep", str(path)], str(path), needle)


def test_empty_class_folder(cli, home, tmp_path_factory):
    root = _image_folder(tmp_path_factory.mktemp("images"))
    (root / "train" / "cow").mkdir()  # used to become a third class without any image
    _refused_in_process(cli, home, _folder_train(root),
                        f"class folder {root / 'train' / 'cow'} has no images",
                        "or remove the folder")


def test_check_sizes_counts_the_batch_per_process():
    """Under torchrun each of W processes takes batch_size // W images, drop_last."""
    from sslbench.config import TrainConfig
    from sslbench.errors import ConfigError
    from sslbench.train.preflight import check_sizes

    check_sizes(TrainConfig(batch_size=8), 8, 1, world_size=4)
    with pytest.raises(ConfigError, match=r"lower --batch-size to 8 or less \(a multiple of the "
                                          r"4 processes\)"):
        check_sizes(TrainConfig(batch_size=12), 10, 1, world_size=4)


def test_bench_scan_prints_its_timings_as_json(cli):
    result = cli("bench", "scan", "--images", "200", "--format", "json")
    assert result.exit_code == 0, result.output
    import json

    record = json.loads(result.output)
    assert record["images"] == 200 and record["repeats"] == 3
    assert 0 <= record["list_s"] <= record["load_s"] and record["scan_s"] > 0
    assert record["scan_us_per_image"] == pytest.approx(1e6 * record["scan_s"] / 200, rel=0.01)
