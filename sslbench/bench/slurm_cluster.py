"""A throw-away one-node Slurm cluster on this machine, for ``sslbench bench slurm`` and the tests.

Debian's ``slurm-wlm`` and ``munge`` daemons, started by hand (no systemd): ``munged`` with its
own key and socket, ``slurmctld -D`` and ``slurmd -D``, every file of theirs (configuration,
state, spool, logs, pid files) in one temporary folder, on free ports. The node has this
machine's CPUs (or ``cpus``) and no GPU; the plugins are the ones that work without cgroups or
an accounting database (``proctrack/linuxproc``, ``task/none``, ``jobacct_gather/none``,
``accounting_storage/none``) and ``select/cons_tres``, so tasks of one CPU each share the node.
Clients find it through ``SLURM_CONF`` (:meth:`Cluster.environ`). :meth:`Cluster.stop` cancels
what is left in its queue and stops the daemons by their pids. slurmd starts tasks as their
user, so it runs as root: :func:`unavailable` says why a cluster cannot start here.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sslbench.paths import environ

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "sinfo", "scontrol", "scancel", "srun")
PARTITION = "debug"


def _find(binary: str) -> str | None:
    return shutil.which(binary) or next(
        (str(p) for d in ("/usr/sbin", "/usr/bin") if (p := Path(d) / binary).exists()), None)


def unavailable() -> str | None:
    """Why a throw-away cluster cannot start on this machine, or None when it can."""
    missing = [b for b in (*DAEMONS, *CLIENTS) if _find(b) is None]
    if missing:
        return (f"Slurm is not installed ({', '.join(missing)} missing): apt-get install "
                "slurm-wlm munge")
    if os.geteuid() != 0:
        return "slurmd must run as root to start tasks as their user (run as root)"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Cluster:
    root: Path
    conf: Path
    cpus: int
    partition: str = PARTITION
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)  # daemon -> process

    def environ(self) -> dict[str, str]:
        """What a Slurm client (sbatch, squeue, ...) needs to find this cluster."""
        return {"SLURM_CONF": str(self.conf)}

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """A Slurm client command against this cluster."""
        return subprocess.run(list(args), capture_output=True, text=True, check=check,
                              env={**os.environ, **self.environ()}, timeout=60)

    def log(self, daemon: str) -> str:
        path = self.root / "log" / f"{daemon}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        """Cancel every job, wait for them to end, stop the daemons (by pid), remove the
        folder."""
        with contextlib.suppress(Exception):
            self.run("scancel", "--quiet", "--partition", self.partition, check=False)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and self.run(
                    "squeue", "-h", "-o", "%i", check=False).stdout.strip():
                time.sleep(0.2)
        for proc in reversed(list(self.procs.values())):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)


def _config(root: Path, host: str, cpus: int) -> str:
    ctld, slurmd = _free_port(), _free_port()
    return f"""\
ClusterName=sslbench{ctld}
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld}
SlurmdPort={slurmd}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={root / 'munge' / 'munge.socket'}
CredType=cred/munge
StateSaveLocation={root / 'state'}
SlurmdSpoolDir={root / 'spool'}
SlurmctldPidFile={root / 'slurmctld.pid'}
SlurmdPidFile={root / 'slurmd.pid'}
SlurmctldLogFile={root / 'log' / 'slurmctld.log'}
SlurmdLogFile={root / 'log' / 'slurmd.log'}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/builtin
MpiDefault=none
ReturnToService=2
SlurmdParameters=config_overrides
KillWait=10
MinJobAge=600
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN
PartitionName={PARTITION} Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


def start(cpus: int | None = None, *, timeout: float = 60.0) -> Cluster:
    """Start a one-node cluster with ``cpus`` CPUs (default: this machine's); raises
    RuntimeError (with the daemons' logs) when it does not come up within ``timeout``."""
    why = unavailable()
    if why is not None:
        raise RuntimeError(why)
    cpus = cpus or os.cpu_count() or 1
    root = Path(tempfile.mkdtemp(prefix="sslbench-slurm-"))
    for sub, mode in (("munge", 0o711), ("state", 0o700), ("spool", 0o700), ("log", 0o700)):
        (root / sub).mkdir(mode=mode)
        (root / sub).chmod(mode)  # mkdir's mode is masked by the umask; munged checks 0711
    key = root / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    host = socket.gethostname().split(".")[0]
    conf = root / "slurm.conf"
    conf.write_text(_config(root, host, cpus))
    cluster = Cluster(root, conf, cpus)
    logs = open(root / "log" / "daemons.out", "ab")  # noqa: SIM115 - the daemons' stdout
    commands = [
        ["munged", f"--key-file={key}", f"--socket={root / 'munge' / 'munge.socket'}",
         f"--pid-file={root / 'munged.pid'}", f"--log-file={root / 'log' / 'munged.log'}",
         f"--seed-file={root / 'munge.seed'}", "--foreground", "--force"],
        ["slurmctld", "-D", "-f", str(conf)],
        ["slurmd", "-D", "-f", str(conf)],
    ]
    try:
        for name, *args in commands:
            cluster.procs[name] = subprocess.Popen([str(_find(name)), *args], stdout=logs,
                                                   stderr=subprocess.STDOUT,
                                                   stdin=subprocess.DEVNULL)
            if name == "munged":
                _wait(lambda: (root / "munge" / "munge.socket").exists(), timeout, cluster)
        _wait(lambda: cluster.run("sinfo", "-h", "-o", "%T", check=False).stdout.strip()
              == "idle", timeout, cluster)
    except BaseException:
        cluster.stop()
        raise
    finally:
        logs.close()
    return cluster


def _wait(ready: Callable[[], bool], timeout: float, cluster: Cluster) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        dead = [name for name, p in cluster.procs.items() if p.poll() is not None]
        if dead or time.monotonic() > deadline:
            logs = " | ".join(cluster.log(d)[-400:] for d in DAEMONS)
            what = f"{dead[0]} exited" if dead else f"not up within {timeout:.0f} s"
            raise RuntimeError(f"the throw-away Slurm cluster did not start ({what}): {logs}")
        time.sleep(0.1)


@contextlib.contextmanager
def running(cpus: int | None = None) -> Iterator[Cluster]:
    """A started cluster whose ``SLURM_CONF`` is this process's (and its children's) for the
    block; stopped afterwards."""
    cluster = start(cpus)
    try:
        with environ(cluster.environ()):
            yield cluster
    finally:
        cluster.stop()
