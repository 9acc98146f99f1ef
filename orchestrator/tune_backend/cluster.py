"""The cluster: attach to one or start a private local one, check that every node reads the run's storage, shut down."""

from __future__ import annotations

import os
import socket
import time

import ray

from orchestrator.runs import RunError
from orchestrator.storage import Location, StorageError, diagnose, open_location


def connect(address: str | None, *, num_cpus: int | None = None, temp_dir: str | None = None) -> bool:
    """Attach to --address / RAY_ADDRESS (a cluster, or the one a Ray job runs in), else start a private local one.

    Never `ray.init()` without an address: that attaches to whatever cluster the machine's current-cluster file
    names, possibly somebody else's. Returns whether this call started Ray (and so should shut it down).
    """
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        _check_gcs(address)
        ray.init(address=address, log_to_driver=True)
    else:
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, _temp_dir=temp_dir,
                 configure_logging=False)
    return True


def _check_gcs(address: str, timeout_s: float = 5.0) -> None:
    """A `host:port` address must accept a TCP connection: `ray.init` would wait minutes for a cluster that is not
    there. `auto`, `local` and `ray://` (Ray Client) addresses are left to Ray."""
    host, sep, port = address.rpartition(":")
    if "://" in address or not sep or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise RunError(f"--address {address}: no Ray cluster answers there ({e.strerror or e}); start one with "
                       "`ray start --head`, or leave --address and RAY_ADDRESS out for a private local one") from None


def check_shared(root: Location, *, timeout_s: float = 60.0) -> None:
    """On a cluster of several nodes, every other node must read what the driver writes under `root`: a probe file
    written here is read back by a task pinned to each other live node. Catches a local path that is not shared
    storage, and a node that cannot reach or authenticate to the object store; one line names the node and the fix.
    """
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = ray.get_runtime_context().get_node_id()
    others = [n for n in ray.nodes() if n["Alive"] and n["NodeID"] != here]
    if not others:
        return
    probe, token = root / f".s4sweep-probe-{here[:12]}-{os.getpid()}", f"{here} {time.time()}"
    probe.write_text(token)
    read = ray.remote(num_cpus=0, max_retries=0)(_read_probe)
    try:
        refs = {n["NodeManagerAddress"]: read.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
            n["NodeID"], soft=False)).remote(str(probe), token) for n in others}
        answers = dict(zip(refs, ray.get(list(refs.values()), timeout=timeout_s), strict=True))
    except ray.exceptions.GetTimeoutError:
        raise StorageError(f"storage {root}: the nodes {', '.join(refs)} did not all answer the storage probe within "
                           f"{timeout_s:g} s; check that every node is healthy (ray status)") from None
    finally:
        probe.delete()
    for node, problem in answers.items():
        if problem is None:
            continue
        if root.local is not None:
            raise StorageError(f"storage {root} is not shared: a file the driver wrote there is {problem} on node "
                               f"{node}; on several nodes --storage must be shared storage mounted at the same path "
                               "on every node (NFS, EFS) or an object-store URI such as s3://bucket/prefix")
        raise StorageError(f"storage {root}: node {node} cannot read what the driver wrote there ({problem}); give "
                           "every node the same endpoint and credentials (AWS_* variables, a profile or a role)")


def _read_probe(uri: str, expected: str) -> str | None:
    """On another node: None if the probe reads back as written, else what went wrong, in words."""
    try:
        location = open_location(uri)
    except StorageError as e:
        return str(e)
    try:
        if not location.is_file():
            return "missing"
        return None if location.read_text() == expected else "different"
    except OSError as e:
        return f"unreadable: {e}" if location.local is not None else diagnose(e, uri)


def shutdown(started: bool) -> None:
    if started and ray.is_initialized():
        ray.shutdown()
