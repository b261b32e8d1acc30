"""The pretraining loop: data, model, optimiser, resume, loop, save -- readable top to bottom.

Identity and resumption: the run id is the hash of the resolved config, so running the same
command again finds the same run. A completed run is reused as is; an interrupted or killed one
resumes from its last checkpoint. Augmentations are seeded per step and the data order per epoch,
so a resumed CPU run computes exactly what an uninterrupted one would have, and metrics are keyed
by (run, key, step), so replayed steps overwrite instead of duplicating.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import sys
import time
import traceback
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import torch

from sslbench import checkpoint as ckpt
from sslbench import numerics, paths
from sslbench.config import TrainConfig
from sslbench.db.heartbeat import Heartbeat
from sslbench.db.ownership import RunBusyError
from sslbench.errors import SSLBenchError, one_line
from sslbench.train import distributed
from sslbench.train.optim import build_optimizer, lr_at, scaled_lr, set_lr
from sslbench.train.probe import OnlineProbe, probe_accuracy


class NonFiniteLoss(SSLBenchError):
    """The loss became NaN or infinite; the run stops as failed."""


@dataclass
class TrainResult:
    run_id: str
    status: str
    reused: bool
    run_dir: Path
    summary: dict[str, float] = field(default_factory=dict)


class _StopFlag:
    """SIGTERM / first SIGINT: finish the step, checkpoint, mark the run interrupted."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopFlag:
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def step_seed(seed: int, step: int, rank: int = 0) -> int:
    """Seed of the augmentation generator at a global step (resume-exact, cheap to set)."""
    return (seed * 1_000_003 + step * 8191 + rank) % (2**63 - 1)


def load_data(cfg: TrainConfig):
    """(pretraining split, test split) -- raises DataError before anything is written."""
    from sslbench.data import load_dataset
    from sslbench.data.subset import subset

    root = cfg.data_root or None
    train = load_dataset(cfg.dataset, "pretrain", root, image_size=cfg.image_size)
    test = load_dataset(cfg.dataset, "test", root, image_size=cfg.image_size)
    if cfg.train_samples:
        train = subset(train, cfg.train_samples, seed=cfg.seed)
    return train, test


def pretrain(cfg: TrainConfig, store, *, command: list[str], progress: bool = True,
             claim: int | None = None) -> TrainResult:
    """Runs (or resumes, or reuses) the pretraining run that ``cfg`` identifies.

    Everything that can be checked is checked before the store or the run folder is touched.
    Then this process takes ownership of the run (refused while another live process owns it;
    ``claim``: the attempt a scheduler opened for this worker), and trains under the numerics
    recorded at the run's first start. Failures that can only happen now (a full disk, a file
    that became unreadable, out of memory) end the run 'failed' with a one-line cause.

    Under torchrun every process calls this; only rank 0 touches the store and the run folder.
    """
    from sslbench.device import device_names
    from sslbench.runs.environment import capture
    from sslbench.train.preflight import check_train

    info = distributed.from_env()
    distributed.check_batch(cfg.batch_size, info)
    device = distributed.setup(info, cfg.device)
    train_ds, test_ds = load_data(cfg)
    check_train(cfg, train_ds, test_ds, device, info.world_size)
    rdir = paths.run_dir(cfg.run_id)
    opened = None
    if info.is_main:
        opened = _open_run(cfg, store, device, command, claim,
                           env=capture(device_names(device)))
    status, settings = distributed.broadcast(opened, info)
    if status == "completed":
        return TrainResult(cfg.run_id, "completed", True, rdir, store.summary(cfg.run_id))
    if status == "busy":
        raise RunBusyError(settings)
    writer = store if info.is_main else distributed.NullStore()
    if info.is_main:
        rdir.mkdir(parents=True, exist_ok=True)
    try:
        with numerics.applied(settings), _StopFlag() as stop, _beating(store, cfg, info):
            status = _train(cfg, writer, device, train_ds, test_ds, rdir, stop,
                            progress and info.is_main, info)
    except NonFiniteLoss as err:
        writer.set_status(cfg.run_id, "failed", error=str(err), failure_class="nonfinite")
        raise
    except ckpt.CheckpointWriteError as err:
        writer.set_status(cfg.run_id, "failed", error=str(err), failure_class="io")
        raise
    except SSLBenchError as err:
        message = one_line(err)
        writer.set_status(cfg.run_id, "failed", error=message, failure_class="input")
        if message != str(err):
            raise RunFailed(message) from None
        raise
    except KeyboardInterrupt:
        writer.set_status(cfg.run_id, "interrupted", error="KeyboardInterrupt")
        raise
    except torch.OutOfMemoryError:
        message = (f"out of memory on {device} (batch {cfg.batch_size}, dim {cfg.dim}, "
                   f"{cfg.backbone}): lower --batch-size or --dim, or use a larger device")
        writer.set_status(cfg.run_id, "failed", error=message, failure_class="oom")
        raise RunFailed(message) from None
    except OSError as err:
        message = (f"run {cfg.run_id} stopped: {_os_error(err)}; fix it and re-run the same "
                   "command to resume from the last checkpoint")
        writer.set_status(cfg.run_id, "failed", error=message, failure_class="io")
        raise RunFailed(message) from None
    except BaseException:
        writer.set_status(cfg.run_id, "failed", error=traceback.format_exc(),
                          failure_class="error")
        raise
    writer.set_status(cfg.run_id, status)
    return TrainResult(cfg.run_id, status, False, rdir, writer.summary(cfg.run_id))


class RunFailed(SSLBenchError):
    """A run failed for a cause outside the program (disk, memory); the store says why."""


def _os_error(err: OSError) -> str:
    reason = err.strerror or one_line(err)
    return f"{reason}: {err.filename}" if err.filename else reason


def _open_run(cfg: TrainConfig, store, device: torch.device, command: list[str],
              claim: int | None, env: dict) -> tuple[str, Any]:
    """Create or find the run, take ownership, adopt its numerics -- on rank 0, broadcast.

    Returns ``("completed", None)``, ``("busy", message)`` or ``("running", numerics)``.
    """
    record, _ = store.upsert_run(run_id=cfg.run_id, kind="pretrain", config=cfg.to_dict(),
                                 command=command, env=env, method=cfg.method,
                                 dataset=cfg.dataset)
    if record.status == "completed":
        return "completed", None
    try:
        store.set_status(cfg.run_id, "running", pid=os.getpid(), claim=claim)
    except RunBusyError as err:
        return "busy", str(err)
    asked = numerics.proposed(device, cfg.threads)
    settings = store.adopt_numerics(cfg.run_id, asked)
    if cfg.threads and settings.get("cpu_threads") != asked["cpu_threads"]:
        _warn(f"run {cfg.run_id} keeps the {settings['cpu_threads']} CPU thread(s) it was "
              f"started with, not --threads {cfg.threads} (one run id, one result)")
    return "running", settings


def _beating(store, cfg: TrainConfig, info: distributed.DistInfo):
    """The run's heartbeat from a side thread, on the process that owns the store."""
    url = getattr(store, "url", None)
    if not info.is_main or not url:
        return contextlib.nullcontext()
    return Heartbeat(url, cfg.run_id)


class _State:
    """Everything a checkpoint holds, built fresh or restored."""

    def __init__(self, cfg: TrainConfig, device: torch.device, num_classes: int,
                 info: distributed.DistInfo):
        from sslbench.device import memory_format
        from sslbench.losses import build_criterion
        from sslbench.models import build_model

        torch.manual_seed(cfg.seed)
        self.model = build_model(cfg.backbone, cfg.projector, cfg.dim, cifar_stem=cfg.cifar_stem)
        if info.enabled and cfg.sync_bn:
            self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        self.model = self.model.to(device, memory_format=memory_format(device))
        self.probe = OnlineProbe(self.model.representation_dim, num_classes).to(device)
        # The modules that run forward: DDP wrappers when distributed (they average gradients).
        self.run_model, self.run_probe = self.model, self.probe
        if info.enabled:
            ids = [device.index] if device.type == "cuda" else None
            ddp = torch.nn.parallel.DistributedDataParallel
            self.run_model = ddp(self.model, device_ids=ids)
            self.run_probe = ddp(self.probe, device_ids=ids)
        if cfg.compile:
            self.run_model = torch.compile(self.run_model)
        self.criterion = build_criterion(cfg.method, **cfg.loss)
        self.peak_lr = scaled_lr(cfg.lr, cfg.batch_size)
        self.optimizer = build_optimizer(cfg.optimizer, self.model, lr=self.peak_lr,
                                         weight_decay=cfg.weight_decay, momentum=cfg.momentum)
        self.probe_optimizer = torch.optim.AdamW(self.probe.parameters(), lr=cfg.probe_lr,
                                                 weight_decay=0.0)
        self.epoch = 0          # the epoch in progress
        self.batch = 0          # batches of that epoch already done
        self.step = 0           # global step
        self.epoch_sums: dict[str, float] = {}

    def state_dict(self, cfg: TrainConfig) -> dict:
        return {"config": cfg.to_dict(), "model": self.model.state_dict(),
                "probe": self.probe.state_dict(), "optimizer": self.optimizer.state_dict(),
                "probe_optimizer": self.probe_optimizer.state_dict(), "epoch": self.epoch,
                "batch": self.batch, "step": self.step, "epoch_sums": self.epoch_sums,
                "torch_rng": torch.get_rng_state()}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.probe.load_state_dict(state["probe"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.probe_optimizer.load_state_dict(state["probe_optimizer"])
        self.epoch, self.batch, self.step = state["epoch"], state["batch"], state["step"]
        self.epoch_sums = dict(state["epoch_sums"])
        torch.set_rng_state(state["torch_rng"])


def _save(cfg: TrainConfig, state: _State, store, rdir: Path) -> None:
    path = rdir / ckpt.CHECKPOINT
    size = ckpt.save(ckpt.stamp(state.state_dict(cfg), cfg), path, keep_previous=True)
    store.log_artifact(cfg.run_id, "checkpoint", str(path), size=size)


def _restore(cfg: TrainConfig, device: torch.device, num_classes: int,
             info: distributed.DistInfo, rdir: Path) -> _State:
    """The training state: from the latest usable checkpoint of this run, else fresh.

    A checkpoint of another run, or one that could run code, stops the run (one line naming the
    file). A damaged one (truncated, empty, random bytes, wrong shapes) is reported in one line
    and the previous checkpoint is tried, then a fresh start: never a crash loop.
    """
    warn = _warn if info.is_main else (lambda message: None)
    latest = rdir / ckpt.CHECKPOINT
    for path in (latest, ckpt.previous_of(latest)):
        if not path.exists():
            continue
        state = _State(cfg, device, num_classes, info)
        try:
            payload = ckpt.load(path, map_location=device)
            ckpt.check_owner(payload, path, cfg)
            state.load_state_dict(payload)
        except ckpt.DamagedCheckpoint as err:
            warn(f"{err}: skipping it")
            continue
        except torch.OutOfMemoryError:
            raise
        except (KeyError, TypeError, ValueError, RuntimeError) as err:
            warn(f"{path} does not fit run {cfg.run_id} ({one_line(err)[:200]}): skipping it")
            continue
        if path != latest:
            warn(f"resuming run {cfg.run_id} from the previous checkpoint {path} "
                 f"(epoch {state.epoch + 1}, step {state.step})")
        return state
    if latest.exists() or ckpt.previous_of(latest).exists():
        warn(f"no usable checkpoint in {rdir}: starting run {cfg.run_id} from scratch")
    return _State(cfg, device, num_classes, info)


def _warn(message: str) -> None:
    """One line on stderr (a worker's stderr is its attempt log)."""
    print(f"warning: {message}", file=sys.stderr, flush=True)


def _train(cfg: TrainConfig, store, device: torch.device, train_ds, test_ds, rdir: Path,
           stop: _StopFlag, show_progress: bool, info: distributed.DistInfo) -> str:
    from sslbench.data import iterate_batches, num_batches
    from sslbench.data.augment import build_augment, eval_transform

    state = _restore(cfg, device, train_ds.num_classes, info, rdir)
    local_batch = cfg.batch_size // info.world_size
    aug1, aug2 = build_augment(cfg.augment, image_size=cfg.image_size, mean=train_ds.mean,
                               std=train_ds.std)
    aug1, aug2 = aug1.to(device), aug2.to(device)
    to_eval = eval_transform(image_size=cfg.image_size, mean=test_ds.mean, std=test_ds.std)
    per_epoch = num_batches(train_ds, local_batch, drop_last=True, world_size=info.world_size)
    total = per_epoch * cfg.epochs
    warmup = per_epoch * cfg.warmup_epochs
    generator = torch.Generator(device=device)
    pending: dict[int, dict[str, float]] = {}
    with _progress(show_progress, total, state.step, cfg.batch_size) as bar:
        while state.epoch < cfg.epochs:
            started = time.perf_counter()
            images_seen = 0
            batches = iterate_batches(train_ds, local_batch, shuffle=True, drop_last=True,
                                      seed=cfg.seed, epoch=state.epoch,
                                      num_workers=cfg.num_workers,
                                      pin_memory=device.type == "cuda",
                                      rank=info.rank, world_size=info.world_size)
            for images, labels in islice(batches, state.batch, None):
                lr = lr_at(state.step, total_steps=total, warmup_steps=warmup,
                           peak_lr=state.peak_lr)
                set_lr(state.optimizer, lr)
                generator.manual_seed(step_seed(cfg.seed, state.step, info.rank))
                terms = _step(state, images, labels, aug1, aug2, generator, device)
                terms["lr"] = lr
                for key, value in terms.items():
                    state.epoch_sums[key] = state.epoch_sums.get(key, 0.0) + value
                state.epoch_sums["_n"] = state.epoch_sums.get("_n", 0.0) + 1
                if state.step % cfg.log_every == 0:
                    pending[state.step] = {k: v for k, v in terms.items() if k != "correct"}
                state.step += 1
                state.batch += 1
                images_seen += len(images)
                bar.advance(terms, state.epoch)
                if distributed.broadcast(stop.requested, info):
                    _flush(store, cfg.run_id, pending)
                    if info.is_main:
                        _save(cfg, state, store, rdir)
                    return "interrupted"
            elapsed = time.perf_counter() - started
            top1 = math.nan
            if info.is_main:
                test_batches = iterate_batches(test_ds, 512, shuffle=False, drop_last=False)
                top1 = probe_accuracy(state.model.backbone, state.probe, test_batches, to_eval,
                                      device)
            pending[state.step] = _epoch_metrics(state, top1, images_seen * info.world_size,
                                                 elapsed)
            bar.epoch_done(top1)
            state.epoch += 1
            state.batch = 0
            state.epoch_sums = {}
            _flush(store, cfg.run_id, pending, epoch=state.epoch)
            if info.is_main:
                _save(cfg, state, store, rdir)
            store.heartbeat(cfg.run_id)
            distributed.barrier(info)
    if info.is_main:
        _export_backbone(cfg, state, store, rdir)
    return "completed"


def _step(state: _State, images, labels, aug1, aug2, generator, device) -> dict[str, float]:
    from sslbench.device import autocast, memory_format, to_device

    x = to_device(images, device)
    labels = labels.to(device, non_blocking=True)
    fmt = memory_format(device)
    v1 = aug1(x, generator).contiguous(memory_format=fmt)
    v2 = aug2(x, generator).contiguous(memory_format=fmt)
    with autocast(device):
        h, z = state.run_model(torch.cat([v1, v2]))
    h1, h2 = h.chunk(2)
    z1, z2 = z.chunk(2)
    out = state.criterion(z1.float(), z2.float())
    loss = out["loss"]
    if not torch.isfinite(loss):
        bad = [k for k, v in out.items() if not torch.isfinite(v)]
        raise NonFiniteLoss(f"loss became non-finite at step {state.step} (terms: "
                            f"{', '.join(bad)}): lower --lr or check the loss weights")
    probe_loss, correct = state.run_probe(torch.cat([h1, h2]), torch.cat([labels, labels]))
    state.optimizer.zero_grad(set_to_none=True)
    state.probe_optimizer.zero_grad(set_to_none=True)
    (loss + probe_loss).backward()
    state.optimizer.step()
    state.probe_optimizer.step()
    terms = {k: float(v.detach()) for k, v in out.items()}
    terms["probe_loss"] = float(probe_loss.detach())
    terms["probe_train_top1"] = 100.0 * float(correct) / (2 * len(labels))
    return terms


def _epoch_metrics(state: _State, top1: float, images: int, elapsed: float) -> dict[str, float]:
    n = max(state.epoch_sums.get("_n", 0.0), 1.0)
    means = {f"epoch_{k}": v / n for k, v in state.epoch_sums.items()
             if k not in ("_n", "lr")}
    return {**means, "online_top1": top1, "epoch": float(state.epoch + 1),
            "images_per_s": images / elapsed if elapsed > 0 else math.nan}


def _flush(store, run_id: str, pending: dict[int, dict[str, float]],
           epoch: int | None = None) -> None:
    for step, metrics in sorted(pending.items()):
        clean = {k: v for k, v in metrics.items() if math.isfinite(v)}
        if clean:
            store.log_metrics(run_id, step, clean, epoch=epoch)
    pending.clear()


def _export_backbone(cfg: TrainConfig, state: _State, store, rdir: Path) -> None:
    """A backbone-only file that evaluation consumes (like the official VICReg code)."""
    path = rdir / ckpt.BACKBONE
    size = ckpt.save(ckpt.stamp({"config": cfg.to_dict(),
                                 "backbone": state.model.backbone.state_dict()}, cfg), path)
    store.log_artifact(cfg.run_id, "backbone", str(path), size=size, sha256=ckpt.sha256_of(path))


class _progress:
    """A rich progress bar with loss, probe accuracy and images/s (silent when disabled)."""

    def __init__(self, enabled: bool, total: int, done: int, batch_size: int):
        self.enabled, self.total, self.done, self.batch_size = enabled, total, done, batch_size
        self.top1 = float("nan")

    def __enter__(self) -> _progress:
        if self.enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(TextColumn("epoch {task.fields[epoch]}"), BarColumn(),
                                 MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                                 TimeRemainingColumn(), transient=True)
            self._bar.__enter__()
            self._task = self._bar.add_task("train", total=self.total, completed=self.done,
                                            epoch=0, info="")
            self._t0, self._n0 = time.perf_counter(), self.done
        return self

    def advance(self, terms: dict[str, float], epoch: int) -> None:
        if not self.enabled:
            return
        self.done += 1
        rate = self.batch_size * (self.done - self._n0) / max(time.perf_counter() - self._t0, 1e-9)
        self._bar.update(self._task, advance=1, epoch=epoch + 1,
                         info=f"loss {terms['loss']:.4f}  probe {self.top1:.1f}%  "
                              f"{rate:.0f} img/s")

    def epoch_done(self, top1: float) -> None:
        self.top1 = top1

    def __exit__(self, *exc: Any) -> None:
        if self.enabled:
            self._bar.__exit__(*exc)
