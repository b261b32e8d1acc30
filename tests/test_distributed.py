"""torchrun with 2 CPU processes (gloo): one run, written once, by rank 0."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from sslbench.errors import ConfigError
from sslbench.train.distributed import DistInfo, check_batch
from tests.conftest import TINY_TRAIN


def test_batch_must_split_across_processes():
    assert check_batch(64, DistInfo(0, 2, 0)) == 32
    with pytest.raises(ConfigError, match="multiple of 3"):
        check_batch(64, DistInfo(0, 3, 0))


@pytest.mark.slow
def test_torchrun_two_processes(tmp_path):
    env = {**os.environ, "SSLBENCH_HOME": str(tmp_path), "OMP_NUM_THREADS": "1"}
    env.pop("SSLBENCH_DB", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "sslbench", "train", "--method", "vicreg", *TINY_TRAIN, "--device", "cpu",
           "--format", "json"]
    out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    from sslbench.db import Store

    store = Store.open(f"sqlite:///{tmp_path / 'db' / 'sslbench.sqlite'}")
    runs = store.find_runs()
    assert len(runs) == 1 and runs[0].status == "completed"
    frame = store.metrics_frame(runs[0].run_id)
    assert not frame.duplicated(["key", "step"]).any()
    assert len(frame[frame.key == "online_top1"]) == 2
    assert (tmp_path / "runs" / runs[0].run_id / "backbone.pt").exists()
    assert runs[0].run_id in out.stdout
