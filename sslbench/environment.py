"""The reproducibility record of a run: versions, git state, host and devices."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
from pathlib import Path

import sslbench


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_state(cwd: Path | None = None) -> dict:
    """Commit and dirty flag of the git checkout holding ``cwd`` (None outside a checkout)."""
    cwd = cwd or Path.cwd()
    commit = _git(["rev-parse", "HEAD"], cwd)
    if commit is None:
        return {"git_commit": None, "git_dirty": None}
    status = _git(["status", "--porcelain", "--untracked-files=no"], cwd)
    return {"git_commit": commit, "git_dirty": bool(status)}


def _version(package: str) -> str | None:
    """``package.__version__`` without importing the package when it is not imported yet: read
    from its ``version.py`` (torch and torchvision write the build's full version there, CUDA
    tag included, which the distribution's metadata leaves out)."""
    import importlib.util
    import re

    if package in sys.modules:
        return getattr(sys.modules[package], "__version__", None)
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        return None
    try:
        text = (Path(spec.origin).parent / "version.py").read_text()
    except OSError:
        text = ""
    found = re.search(r"^__version__\s*=\s*['\"]([^'\"]+)['\"]", text, re.M)
    if found:
        return found.group(1)
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def capture(device_names: list[str] | None = None) -> dict:
    """Versions of python, torch, torchvision, CUDA and cuDNN; git; host; devices."""
    env: dict = {
        "sslbench": sslbench.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "argv0": sys.argv[0] if sys.argv else None,
    }
    try:
        import torch

        # Its installed version, not an import: importing torchvision costs a worker ~0.2 s
        # (and torch._dynamo with it) that a run without a torchvision model never needs.
        env.update(torch=torch.__version__, torchvision=_version("torchvision"),
                   cuda=torch.version.cuda,
                   cudnn=torch.backends.cudnn.version() if torch.backends.cudnn.is_available()
                   else None,
                   cuda_available=torch.cuda.is_available(),
                   num_threads=torch.get_num_threads())
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    env["devices"] = device_names or []
    env.update(git_state())
    return env
