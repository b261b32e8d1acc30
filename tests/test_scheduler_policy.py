"""Pure parts of the scheduler: retry decisions by failure class, the device pool and its
environment, slot picking (against a brute-force reference), bad --devices input."""

from __future__ import annotations

import itertools
import signal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sslbench.errors import ConfigError
from sslbench.runs.devices import DevicePool, build_pool, pick_slots
from sslbench.runs.policy import RetryPolicy, decide, describe_exit

POLICY = RetryPolicy(max_attempts=3, transient=(r"NCCL .*timeout", r"ECONNRESET"))


@pytest.mark.parametrize("status, cls, error, attempts, expected", [
    ("completed", None, None, 1, "done"),
    ("interrupted", None, None, 1, "stopped"),
    ("failed", "oom", "CUDA out of memory", 1, "retry-exclusive"),
    ("failed", "oom", "CUDA out of memory", 3, "give-up"),
    ("killed", "killed", "signal 9", 1, "retry"),
    ("killed", "lost", "reaped", 2, "retry"),
    ("killed", "lost", "reaped", 3, "give-up"),
    ("failed", "error", "ValueError: bad", 1, "give-up"),
    ("failed", "error", "RuntimeError: NCCL op timeout", 1, "retry"),
    ("failed", "error", "socket: ECONNRESET", 2, "retry"),
    ("failed", "nonfinite", "NCCL timeout", 1, "give-up"),  # deterministic: never
    ("failed", "input", "ECONNRESET", 1, "give-up"),  # a user error: never
    ("failed", None, "ValueError", 1, "give-up"),
])
def test_decisions_by_failure_class(status, cls, error, attempts, expected):
    decision = decide(status, cls, error, attempts=attempts, attempt_limit=3, policy=POLICY)
    assert decision.action == expected, decision.reason


def test_no_retries_while_stopping():
    decision = decide("killed", "killed", None, attempts=1, attempt_limit=3, policy=POLICY,
                      stopping=True)
    assert decision.action == "give-up" and "stopping" in decision.reason


def test_describe_exit():
    assert describe_exit(-signal.SIGKILL) == "signal 9 (SIGKILL)"
    assert describe_exit(1) == "exit code 1" and describe_exit(None) == "no exit code"
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)


def test_cpu_pool_threads_and_environment():
    pool = build_pool(None, workers=2, cores=8)
    assert pool.is_cpu and pool.total_slots == 2 and pool.threads_per_worker() == 4
    env = pool.worker_env("cpu")
    assert env["CUDA_VISIBLE_DEVICES"] == "" and env["OMP_NUM_THREADS"] == "4"
    assert build_pool(None, cores=2).total_slots == 2  # default: min(4, cores)
    assert build_pool(None, workers=5, cores=2).threads_per_worker() == 1


def test_cuda_pool_maps_to_the_parents_visible_devices():
    pool = build_pool("1,3", per_device=2, cuda_count=4, cores=16,
                      environ={"CUDA_VISIBLE_DEVICES": "GPU-a,GPU-b,GPU-c,GPU-d"})
    assert pool.describe() == ["cuda1:0", "cuda1:1", "cuda3:0", "cuda3:1"]
    assert pool.worker_env("3")["CUDA_VISIBLE_DEVICES"] == "GPU-d"
    assert pool.worker_env("1")["OMP_NUM_THREADS"] == "4"
    plain = build_pool("0,1", cuda_count=2, cores=2, environ={})
    assert plain.worker_env("1")["CUDA_VISIBLE_DEVICES"] == "1"


@pytest.mark.parametrize("devices, kwargs, needle", [
    ("0,1", dict(cuda_count=0), "no CUDA device"),
    ("0,4", dict(cuda_count=2), "device 4 does not exist"),
    ("0,0", dict(cuda_count=2), "twice"),
    ("gpu0", dict(cuda_count=2), "must list CUDA device indices"),
    ("0", dict(cuda_count=1, workers=2), "--workers sets CPU workers"),
    ("0", dict(cuda_count=1, per_device=0), "--per-device must be >= 1"),
    (None, dict(workers=0), "--workers must be >= 1"),
])
def test_bad_devices_are_one_line_errors(devices, kwargs, needle):
    with pytest.raises(ConfigError) as info:
        build_pool(devices, environ={}, **kwargs)
    assert needle in str(info.value) and "\n" not in str(info.value)


def _reference_pick(pool: DevicePool, reserved: dict, exclusive: bool):
    """Brute force: every (device, slot) choice, ranked by the documented rule."""
    options = []
    for order, device in enumerate(pool.devices):
        busy = set(reserved.get(device, {}))
        if exclusive:
            if not busy:
                options.append(((order,), device, list(range(pool.per_device))))
            continue
        for slot in range(pool.per_device):
            if slot not in busy:
                options.append(((len(busy), order, slot), device, [slot]))
    return None if not options else min(options, key=lambda o: o[0])[1:]


@settings(max_examples=200, deadline=None)
@given(n_devices=st.integers(1, 4), per_device=st.integers(1, 3),
       busy=st.sets(st.tuples(st.integers(0, 3), st.integers(0, 3)), max_size=10),
       exclusive=st.booleans())
def test_pick_slots_matches_the_reference(n_devices, per_device, busy, exclusive):
    pool = DevicePool(tuple(str(i) for i in range(n_devices)), per_device, 8)
    reserved: dict = {}
    for device, slot in busy:
        reserved.setdefault(str(device), {})[slot] = "other"
    got = pick_slots(pool, reserved, exclusive=exclusive)
    want = _reference_pick(pool, reserved, exclusive)
    assert (None if got is None else (got[0], got[1])) == (None if want is None else tuple(want))


def test_filling_a_pool_spreads_runs_over_devices_first():
    pool = DevicePool(("0", "1", "2"), 2, 8)
    reserved: dict = {}
    order = []
    for i in itertools.count():
        choice = pick_slots(pool, reserved, exclusive=False)
        if choice is None:
            break
        device, (slot,) = choice
        reserved.setdefault(device, {})[slot] = f"r{i}"
        order.append(device)
    assert order == ["0", "1", "2", "0", "1", "2"]
