"""What the parent run records about the driver's environment: versions, hardware and `pip freeze`."""

from __future__ import annotations

import importlib.metadata
import platform
import socket
import subprocess
import sys


def environment_info() -> dict[str, str]:
    """Versions and hardware for the parent run's tags, and `pip freeze` for an artifact."""
    info = {"python": platform.python_version(), "platform": platform.platform(), "hostname": socket.gethostname()}
    for package in ("torch", "torchvision", "ray", "mlflow", "optuna"):
        try:
            info[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            info[package] = "not installed"
    info["cuda"], info["devices"] = "none", "cpu"
    try:
        import torch

        if torch.cuda.is_available():
            info["cuda"] = str(torch.version.cuda)
            info["devices"] = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    except ImportError:
        pass
    info["pip_freeze"] = _pip_freeze()
    return info


def _pip_freeze() -> str:
    try:
        done = subprocess.run([sys.executable, "-m", "pip", "freeze"], capture_output=True, text=True, timeout=120)
        if done.returncode == 0:
            return done.stdout
    except (OSError, subprocess.TimeoutExpired):
        pass
    # No pip in this environment (uv venvs): the installed distributions say the same.
    dists = {(d.metadata["Name"] or "?", d.version) for d in importlib.metadata.distributions()}
    return "".join(f"{name}=={version}\n" for name, version in sorted(dists, key=lambda d: d[0].lower()))
