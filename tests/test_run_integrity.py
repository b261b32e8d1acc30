"""Every stored result is what it claims to be, through the real CLI as a user types it.

Each test starts from a failure that was observed before it was fixed: a crafted pickle whose
payload ran through `train` and `eval`; a checkpoint copied from another run and resumed as this
run's; damaged checkpoints that crash-looped; two identical `train` commands that both trained
one run and left an attempt open; one run id that ended with different weights under `train`,
`sweep --workers 1` and `sweep --workers 2`; a full disk that printed a 60-line traceback.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import (
    TINY_SIMCLR,
    cli_env,
    completed,
    copy_home,
    invoke_in,
    run_cli,
    tiny_simclr_sweep,
)

TRAIN = TINY_SIMCLR
# Every test here trains or drives the real CLI end to end: seconds to a minute each.
pytestmark = pytest.mark.slow


def _run_id(*, seed: int = 0, epochs: int = 2, samples: int = 256) -> str:
    from sslbench.train.setup import resolve_train_config

    return resolve_train_config(dict(method="simclr", dataset="shapes", backbone="small",
                                     projector="64-d", dim=16, epochs=epochs, batch_size=64,
                                     train_samples=samples, lr=0.3, seed=seed)).run_id


def _store(home: Path):
    from sslbench.db import Store

    return Store.open(f"sqlite:///{home / 'db' / 'sslbench.sqlite'}", create=False)


def _weights(home: Path, run_id: str) -> dict[str, torch.Tensor]:
    return torch.load(home / "runs" / run_id / "backbone.pt", weights_only=True)["backbone"]


def _assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    differ = [name for name in a if not torch.equal(a[name], b[name])]
    assert not differ, f"{len(differ)} of {len(a)} tensors differ, first {differ[0]}"


def _one_error_line(result: subprocess.CompletedProcess, *needles: str) -> str:
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def _start(args: list[str], home: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "sslbench", *args], cwd=home,
                            env=cli_env(home), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


@pytest.fixture
def trained(tiny_simclr) -> Path:
    """The session's home holding the completed TRAIN run (2 epochs: checkpoint.pt and
    checkpoint.prev.pt), trained by `python -m sslbench`. Read it only; copy it to change it.

    Each user-facing case below runs the real CLI at least once; its variants run in-process
    (the ``cli`` fixture: the same code, without ~3-5 s of interpreter start and imports)."""
    return tiny_simclr


# ----------------------------------------------------------------------- nothing executes

class _Payload:
    """Pickles as a call of exec(): what a crafted checkpoint does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def _craft(path: Path, marker: Path) -> None:
    torch.save({"model": {"w": torch.zeros(1)}, "evil": _Payload(marker)}, path)
    # The file really is armed: an unsafe load runs the payload (then clean up for the test).
    torch.load(path, weights_only=False)
    assert marker.exists()
    marker.unlink()


def test_a_crafted_checkpoint_is_refused_by_train_and_its_payload_never_runs(tmp_path):
    home, marker = tmp_path, tmp_path / "PWNED"
    run_dir = home / "runs" / _run_id()
    run_dir.mkdir(parents=True)
    _craft(run_dir / "checkpoint.pt", marker)
    result = run_cli(TRAIN, home)
    _one_error_line(result, "refusing to load", str(run_dir / "checkpoint.pt"))
    assert not marker.exists()


def test_a_crafted_backbone_is_refused_by_eval_and_its_payload_never_runs(trained, home, cli):
    copy_home(trained, home)
    marker = home / "PWNED"
    _craft(home / "runs" / _run_id() / "backbone.pt", marker)
    # In-process: a crafted file through the real CLI is the case above.
    result = completed(cli("eval", _run_id(), "--protocol", "knn"))
    _one_error_line(result, "refusing to load", "backbone.pt")
    assert not marker.exists()
    with _store(home) as store:
        assert store.find_runs(kind="eval") == []  # refused before anything was written


def test_checkpoints_hold_tensors_and_plain_values_only(trained):
    """Every file a run writes loads with weights_only=True (no allow-listed classes needed)."""
    run_dir = trained / "runs" / _run_id()
    for name in ("checkpoint.pt", "checkpoint.prev.pt", "backbone.pt"):
        payload = torch.load(run_dir / name, weights_only=True)
        assert payload["sslbench"]["run_id"] == _run_id()
        assert len(payload["sslbench"]["config_sha256"]) == 64


# ------------------------------------------------------------------- foreign checkpoints

def test_a_checkpoint_copied_from_another_run_is_refused(trained, tmp_path):
    home = copy_home(trained, tmp_path / "home")
    other = home / "runs" / _run_id(seed=1)
    other.mkdir(parents=True)
    shutil.copy(home / "runs" / _run_id() / "checkpoint.pt", other / "checkpoint.pt")
    result = run_cli([a if a != "0" else "1" for a in TRAIN], home)  # --seed 1
    _one_error_line(result, str(other / "checkpoint.pt"), f"belongs to run {_run_id()}",
                    f"not to run {_run_id(seed=1)}")
    assert not (other / "backbone.pt").exists()
    with _store(home) as store:
        assert store.get_run(_run_id(seed=1)).status != "completed"


def test_a_backbone_copied_from_another_run_is_refused_by_eval(trained, home, cli):
    copy_home(trained, home)
    with _store(home) as store:  # pretend run seed=1 completed, with run seed=0's backbone
        from sslbench.train.setup import resolve_train_config

        cfg = resolve_train_config(dict(method="simclr", dataset="shapes", backbone="small",
                                        projector="64-d", dim=16, epochs=2, batch_size=64,
                                        train_samples=256, lr=0.3, seed=1))
        store.upsert_run(run_id=cfg.run_id, kind="pretrain", config=cfg.to_dict(),
                         command=["test"], env={})
        store.set_status(cfg.run_id, "running")
        store.set_status(cfg.run_id, "completed")
    (home / "runs" / cfg.run_id).mkdir()
    shutil.copy(home / "runs" / _run_id() / "backbone.pt", home / "runs" / cfg.run_id)
    # In-process: a copied file through the real CLI is the case above.
    result = completed(cli("eval", cfg.run_id, "--protocol", "knn"))
    _one_error_line(result, "backbone.pt", f"belongs to run {_run_id()}")


# -------------------------------------------------------------------- damaged checkpoints

def _damage(path: Path, how: str) -> None:
    if how == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "random-bytes":
        path.write_bytes(torch.randint(0, 256, (4096,), dtype=torch.uint8,
                                       generator=torch.Generator().manual_seed(0)).numpy()
                         .tobytes())
    elif how == "wrong-shapes":  # this run's stamp, another architecture's weights
        payload = torch.load(path, weights_only=True)
        payload["model"] = {k: torch.zeros(3, 3) for k in payload["model"]}
        torch.save(payload, path)
    else:
        raise AssertionError(how)


def _reopen(home: Path, run_id: str) -> None:
    """Make the completed run resumable again, as if it had been stopped after epoch 2."""
    with _store(home) as store:
        store.set_status(run_id, "interrupted")
    (home / "runs" / run_id / "backbone.pt").unlink()


@pytest.mark.parametrize("how", ["truncated", "empty", "random-bytes", "wrong-shapes"])
def test_a_damaged_checkpoint_falls_back_to_the_previous_one(trained, home, cli, how):
    run_id = _run_id()
    copy_home(trained, home)
    _reopen(home, run_id)
    _damage(home / "runs" / run_id / "checkpoint.pt", how)
    # The first case through the real CLI, the others in-process.
    result = run_cli(TRAIN, home) if how == "truncated" else completed(cli(*TRAIN))
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 2, result.stderr
    assert "checkpoint.pt" in warnings[0] and "skipping it" in warnings[0]
    assert "previous checkpoint" in warnings[1] and "epoch 2" in warnings[1]
    # Epoch 2 was replayed from the epoch-1 checkpoint: the same weights, bit for bit.
    _assert_same_weights(_weights(home, run_id), _weights(trained, run_id))
    with _store(home) as store:
        assert store.get_run(run_id).status == "completed"
        assert not store.metrics_frame(run_id).duplicated(["key", "step"]).any()


def test_no_usable_checkpoint_starts_from_scratch_and_says_so(trained, home, cli):
    run_id = _run_id()
    copy_home(trained, home)
    _reopen(home, run_id)
    _damage(home / "runs" / run_id / "checkpoint.pt", "truncated")
    _damage(home / "runs" / run_id / "checkpoint.prev.pt", "empty")
    result = completed(cli(*TRAIN))  # (damaged checkpoints through the real CLI: above)
    assert result.returncode == 0, result.stderr
    assert "from scratch" in result.stderr.splitlines()[-1]
    _assert_same_weights(_weights(home, run_id), _weights(trained, run_id))
    # ... and never a crash loop: the next command simply reuses the completed run.
    again = completed(cli(*TRAIN))
    assert again.returncode == 0 and "reused completed run" in again.stdout


# -------------------------------------------------------------------------- one owner

@pytest.mark.slow
def test_two_identical_trains_started_together_one_trains_one_refuses(tmp_path):
    args = [*TRAIN, "--epochs", "3", "--train-samples", "512"]
    procs = [_start(args, tmp_path) for _ in range(2)]
    results = [(p.wait(timeout=300), *p.communicate()) for p in procs]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 1], results
    (_, _, refused_err), = [r for r in results if r[0] == 1]
    lines = [line for line in refused_err.splitlines() if line.strip()]
    assert len(lines) == 1 and "is already running: owned by pid" in lines[0], refused_err
    assert "since" in lines[0] and "runs stop" in lines[0]
    run_id = _run_id(epochs=3, samples=512)
    with _store(tmp_path) as store:
        assert store.get_run(run_id).status == "completed"
        attempts = store.attempt_details(run_id)
        assert [a["status"] for a in attempts] == ["completed"]  # none opened, none left open


# -------------------------------------------------------------------------- one numeric

def _sweep(home: Path, seeds: list[int], workers: int, *, epochs: int = 2,
           samples: int = 256) -> subprocess.CompletedProcess:
    path = home / "same.toml"
    path.write_text(tiny_simclr_sweep(epochs=epochs, samples=samples, seeds=str(seeds)))
    return run_cli(["sweep", str(path), "--workers", str(workers)], home)


@pytest.mark.slow
def test_one_run_id_gives_one_result_across_train_and_sweeps(trained, tmp_path):
    run_id = _run_id()
    homes = {"workers1": tmp_path / "w1", "workers2": tmp_path / "w2"}
    for home in homes.values():
        home.mkdir()
    assert _sweep(homes["workers1"], [0], 1).returncode == 0
    # Two runs on two workers, so that two processes really share the machine.
    assert _sweep(homes["workers2"], [0, 1], 2).returncode == 0
    trained = copy_home(trained, tmp_path / "train")
    reference = _weights(trained, run_id)  # `sslbench train`
    for home in homes.values():
        with _store(home) as store:
            assert store.get_run(run_id).status == "completed"
            assert store.get_run(run_id).numerics["cpu_threads"] == 1
        _assert_same_weights(_weights(home, run_id), reference)
    shown = completed(invoke_in(trained, "runs", "show", run_id))
    assert "numerics (recorded at the first start" in shown.stdout
    assert 'cpu_threads     1' in shown.stdout
    with _store(trained) as store:
        online = store.metrics_frame(run_id, "online_top1")["value"].tolist()
    with _store(homes["workers2"]) as store:
        assert store.metrics_frame(run_id, "online_top1")["value"].tolist() == online


# -------------------------------------------------------------------------- full disk

def _mount_tmpfs(folder: Path, size: int) -> bool:
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                          capture_output=True)
    return done.returncode == 0


@pytest.mark.slow
def test_a_full_disk_fails_the_run_in_one_line_and_keeps_the_last_checkpoint(trained, tmp_path):
    run_id = _run_id()
    size = (trained / "runs" / run_id / "checkpoint.pt").stat().st_size
    home = tmp_path / "small"
    # Room for one checkpoint and a half: the first save fits, the second cannot be written.
    if not _mount_tmpfs(home, int(size * 1.5) // 4096 * 4096):
        pytest.skip("needs root and `mount -t tmpfs` to make a small full filesystem")
    try:
        store_url = f"sqlite:///{tmp_path / 'store.sqlite'}"
        result = run_cli(["--db", store_url, *TRAIN], home)
        line = _one_error_line(result, "cannot write", "checkpoint.pt", "no space left")
        from sslbench.db import Store

        with Store.open(store_url) as store:
            record = store.get_run(run_id)
            assert record.status == "failed" and record.error == line.removeprefix("error: ")
            assert store.attempt_details(run_id)[-1]["failure_class"] == "io"
        payload = torch.load(home / "runs" / run_id / "checkpoint.pt", weights_only=True)
        assert payload["epoch"] == 1  # the last good checkpoint, intact
        assert not list((home / "runs" / run_id).glob(".*.tmp"))
    finally:
        subprocess.run(["umount", str(home)], capture_output=True)


def test_threads_are_recorded_at_the_first_start_and_kept_by_every_resume(trained, home, cli):
    """(In-process: the numerics are applied around the run and restored after it.)"""
    run_id, threads = _run_id(), torch.get_num_threads()
    first = completed(cli(*TRAIN, "--threads", "2"))
    assert first.returncode == 0, first.stderr
    assert torch.get_num_threads() == threads
    with _store(home) as store:
        assert store.get_run(run_id).numerics == {"cpu_threads": 2, "processes": 1}
    _reopen(home, run_id)
    again = completed(cli(*TRAIN, "--threads", "1"))
    assert again.returncode == 0, again.stderr
    assert f"run {run_id} keeps the 2 CPU thread(s) it was started with" in again.stderr
    with _store(home) as store:
        assert store.get_run(run_id).numerics == {"cpu_threads": 2, "processes": 1}
    # Two threads compute another result than one: which is why the count is recorded at all.
    ours, reference = _weights(home, run_id), _weights(trained, run_id)
    assert any(not torch.equal(ours[name], reference[name]) for name in reference)


def test_eval_refuses_a_run_that_a_live_process_owns(trained, home, cli):
    """(Two trains racing for one run, through the real CLI: above. Every protocol shares the
    one evaluation lifecycle; analysis on 128 images is the cheapest to run to completion.)"""
    copy_home(trained, home)
    from sslbench.evaluate.run import eval_config_for

    args = ["eval", _run_id(), "--protocol", "analysis", "--samples", "128"]
    with _store(home) as store:
        cfg = eval_config_for(store, _run_id(), protocol="analysis", samples=128)
        store.upsert_run(run_id=cfg.run_id, kind="eval", config=cfg.to_dict(), command=["t"],
                         env={}, parent_id=_run_id())
        owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        try:
            store.set_status(cfg.run_id, "running", pid=owner.pid)
            result = completed(cli(*args))
            _one_error_line(result, f"run {cfg.run_id} is already running",
                            f"owned by pid {owner.pid}")
            assert store.get_run(cfg.run_id).attempts == 1
        finally:
            owner.kill()
            owner.wait()
        result = completed(cli(*args))  # dead owner: taken over
        assert result.returncode == 0, result.stderr
        first, second = store.attempt_details(cfg.run_id)
        assert first["status"] == "killed" and "taken over" in first["error"]
        assert second["status"] == "completed"


def _image_folder(root: Path, per_class: int) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in (("train", per_class), ("val", 4)):
        for cls in ("a", "b"):
            (root / split / cls).mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / cls / f"{i}.jpg")


def test_an_image_that_becomes_unreadable_mid_run_fails_it_in_one_line(tmp_path):
    data, home = tmp_path / "data", tmp_path / "home"
    home.mkdir()
    _image_folder(data, per_class=32)
    args = ["train", "--dataset", "imagefolder", "--data-root", str(data), "--image-size", "16",
            "--backbone", "small", "--projector", "64-d", "--dim", "16", "--epochs", "200",
            "--batch-size", "16", "--quiet"]
    proc = _start(args, home)
    try:
        deadline = time.time() + 240
        while not list(home.glob("runs/*/checkpoint.pt")):
            assert proc.poll() is None and time.time() < deadline, proc.stderr.read()
            time.sleep(0.02)
        for image in (data / "train").rglob("*.jpg"):  # a disk or a colleague breaks them
            image.write_bytes(b"no longer a JPEG")
        _, stderr = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    result = subprocess.CompletedProcess(args, proc.returncode, "", stderr)
    line = _one_error_line(result, "unreadable image", str(data / "train"))
    (checkpoint,) = home.glob("runs/*/checkpoint.pt")
    payload = torch.load(checkpoint, weights_only=True)  # the last good one, intact
    assert payload["epoch"] >= 1
    with _store(home) as store:
        (run,) = store.find_runs(kind="pretrain")
        assert run.status == "failed" and run.error == line.removeprefix("error: ")
