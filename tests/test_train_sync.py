"""The training loop reads device values on the host only at its sync points, and a NaN loss
still fails the run (class ``nonfinite``) before any checkpoint could hold NaN weights.

A host read of a device value (``.item()``, ``float(t)``, ``if t:``, ``.tolist()``, ``.cpu()``)
waits for the device to finish all queued work; on a GPU, one per step is one stall per step. On
CPU these reads are cheap but still countable: each is counted here by the function that made it.
Reads made inside the criteria's input checks and the augmentations are not the loop's and are
not counted (see the module docstrings of ``sslbench.losses.inputs`` / ``sslbench.data``).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from sslbench import checkpoint as ckpt
from sslbench import paths
from sslbench.config import TrainConfig
from sslbench.db.models import RunStatus
from sslbench.db.store import Store
from sslbench.train import loop
from sslbench.train import probe as probe_module
from sslbench.train.probe import UNLABELED, OnlineProbe

#: The Tensor methods through which a value leaves the device for the host.
HOST_READS = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__")
#: Files whose per-step code is under test (probe_accuracy, the end-of-epoch evaluation, aside):
#: the loop, the online probe, every criterion and the crop kernels. (data/augment.py reads a
#: mask on CPU tensors only, where a read is no device sync, so a CPU test cannot judge it.)
_PACKAGE = Path(loop.__file__).resolve().parents[1]
LOOP_FILES = (str(Path(loop.__file__)), str(Path(probe_module.__file__)),
              str(_PACKAGE / "data" / "augment_ops.py"),
              *(str(p) for p in sorted((_PACKAGE / "losses").glob("*.py"))))


@contextmanager
def counting_host_reads() -> Iterator[list[tuple[str, str]]]:
    """Every host read made directly by the loop's files, as (method, calling function)."""
    reads: list[tuple[str, str]] = []
    saved = {name: vars(torch.Tensor).get(name) for name in HOST_READS}

    def wrap(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        def counted(self: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            caller = sys._getframe(1).f_code
            if caller.co_filename in LOOP_FILES and caller.co_name != "probe_accuracy":
                reads.append((name, caller.co_name))
            return original(self, *args, **kwargs)
        return counted

    for name in HOST_READS:
        setattr(torch.Tensor, name, wrap(name, getattr(torch.Tensor, name)))
    try:
        yield reads
    finally:
        for name, original in saved.items():
            if original is None:
                delattr(torch.Tensor, name)  # it was inherited from torch._C.TensorBase
            else:
                setattr(torch.Tensor, name, original)


def _cfg(steps_per_epoch: int, **kw: Any) -> TrainConfig:
    base: dict[str, Any] = dict(method="vicreg", dataset="shapes", backbone="small",
                                projector="64-d", dim=16, epochs=1, batch_size=64,
                                train_samples=64 * steps_per_epoch, lr=0.3, seed=0,
                                device="cpu", log_every=1000)
    return TrainConfig(**{**base, **kw})


@pytest.fixture
def store(home: Path) -> Iterator[Store]:
    with Store.open(f"sqlite:///{home / 'store.sqlite'}") as opened:
        yield opened


def _train(cfg: TrainConfig, store: Store) -> loop.TrainResult:
    return loop.pretrain(cfg, store, command=["test"], progress=False)


@pytest.mark.slow
@pytest.mark.parametrize(("steps", "log_every", "syncs"), [(2, 1000, 1), (6, 1000, 1), (6, 2, 3),
                                                            (6, 4, 2)])
def test_host_reads_happen_at_sync_points_only(store, steps, log_every, syncs):
    """One transfer per ``log_every`` steps plus one at the epoch's end (none if that window
    is empty): the count does not grow with the number of steps."""
    with counting_host_reads() as reads:
        result = _train(_cfg(steps, log_every=log_every), store)
    assert result.status == RunStatus.COMPLETED
    assert reads == [("tolist", "drain")] * syncs


@pytest.mark.slow
def test_logged_metrics_are_those_of_every_step(store):
    """The values logged at step % log_every == 0 and the epoch means come from the same host
    arithmetic as before (the resume tests compare runs bit for bit; this checks the keys)."""
    cfg = _cfg(6, log_every=2)
    _train(cfg, store)
    frame = store.metrics_frame(cfg.run_id)
    steps = {key: sorted(frame[frame.key == key]["step"]) for key in ("loss", "probe_train_top1",
                                                                     "lr", "epoch_loss")}
    assert steps == {"loss": [0, 2, 4], "probe_train_top1": [0, 2, 4], "lr": [0, 2, 4],
                     "epoch_loss": [6]}
    loss = frame[frame.key == "loss"].set_index("step")["value"]
    epoch_loss = frame[frame.key == "epoch_loss"]["value"].iloc[0]
    assert all(math.isfinite(v) for v in loss) and math.isfinite(epoch_loss)
    top1 = frame[frame.key == "probe_train_top1"]["value"]
    assert all(v == 100.0 * round(v * 128 / 100.0) / 128 for v in top1)  # correct / 128 samples


def _explode_at(monkeypatch: pytest.MonkeyPatch, nan_step: int) -> dict[str, bool]:
    """The criterion returns a NaN ``cov`` (so a NaN loss) from its ``nan_step``-th call on."""
    import sslbench.losses as losses

    real, calls, seen = losses.build_criterion, [0], {"nan": False}

    def exploding(name: str, **hp: Any) -> Callable[..., dict[str, torch.Tensor]]:
        criterion = real(name, **hp)

        def forward(z1: torch.Tensor, z2: torch.Tensor) -> dict[str, torch.Tensor]:
            out = criterion(z1, z2)
            calls[0] += 1
            if calls[0] > nan_step:
                seen["nan"] = True
                out["cov"] = out["cov"] * float("nan")
                out["loss"] = out["loss"] + out["cov"]
            return out
        return forward
    monkeypatch.setattr(losses, "build_criterion", exploding)
    return seen


def _all_finite(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return not value.is_floating_point() or bool(torch.isfinite(value).all())
    if isinstance(value, dict):
        return all(_all_finite(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return all(_all_finite(v) for v in value)
    return not isinstance(value, float) or math.isfinite(value)


def _assert_failed_nonfinite(store: Store, cfg: TrainConfig, nan_step: int,
                             err: pytest.ExceptionInfo[loop.NonFiniteLoss]) -> None:
    assert f"non-finite at step {nan_step}" in str(err.value) and "cov" in str(err.value)
    record = store.get_run(cfg.run_id)
    assert record.status == RunStatus.FAILED and "cov" in (record.error or "")
    assert store.attempts(cfg.run_id)[-1]["failure_class"] == "nonfinite"
    rdir = paths.run_dir(cfg.run_id)
    assert not (rdir / ckpt.BACKBONE).exists()
    # The checkpoint left is the first epoch's (4 steps), finite to the last tensor.
    state = ckpt.load(rdir / ckpt.CHECKPOINT, map_location="cpu")
    assert (state["epoch"], state["step"]) == (1, 4)
    assert _all_finite(state)


@pytest.mark.slow
@pytest.mark.parametrize("nan_step", [5, 7])
def test_a_nan_loss_fails_the_run_before_any_nan_checkpoint(store, monkeypatch, nan_step):
    """Step 7 is the epoch's last: found by the epoch-end sync, before the evaluation and the
    save. Step 5: the NaN weights it made give NaN embeddings at step 6, whose check names the
    NaN loss of step 5 as the cause."""
    _explode_at(monkeypatch, nan_step)
    cfg = _cfg(4, epochs=2, log_every=10)
    with pytest.raises(loop.NonFiniteLoss) as err:
        _train(cfg, store)
    _assert_failed_nonfinite(store, cfg, nan_step, err)


@pytest.mark.slow
def test_a_nan_loss_is_found_before_the_checkpoint_of_an_interruption(store, monkeypatch):
    """A stop request right after the NaN step: the interruption's checkpoint would be saved
    mid-window, so the window is checked first and the run fails instead."""
    seen = _explode_at(monkeypatch, 5)

    class StopAfterNaN(loop._StopFlag):
        @property
        def requested(self) -> bool:
            return seen["nan"]

        @requested.setter
        def requested(self, value: bool) -> None:
            pass
    monkeypatch.setattr(loop, "_StopFlag", StopAfterNaN)
    cfg = _cfg(4, epochs=2, log_every=10)
    with pytest.raises(loop.NonFiniteLoss) as err:
        _train(cfg, store)
    _assert_failed_nonfinite(store, cfg, 5, err)


def test_probe_loss_without_a_branch_on_the_labels():
    """Masked by weights instead of ``if labelled.any()``: the mean over labelled samples, bit
    for bit ``cross_entropy``'s, and 0 with no gradient when nothing is labelled."""
    torch.manual_seed(0)
    probe = OnlineProbe(8, 5)
    h = torch.randn(12, 8)
    labels = torch.randint(0, 5, (12,))
    labels[::3] = UNLABELED
    loss, correct = probe(h, labels)
    logits = probe.linear(h)
    assert torch.equal(loss, F.cross_entropy(logits, labels, ignore_index=UNLABELED))
    keep = labels != UNLABELED
    assert int(correct) == int((logits.argmax(1)[keep] == labels[keep]).sum())
    loss, correct = probe(h, torch.full((12,), UNLABELED))
    loss.backward()
    assert float(loss.detach()) == 0.0 and int(correct) == 0
    assert all(p.grad is not None and not p.grad.any() for p in probe.parameters())
