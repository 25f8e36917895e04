"""Connecting the driver to Ray: a local Ray of this machine's size, or a running cluster."""

from __future__ import annotations

import socket

from peft_space import FieldError


def connect(address: str | None) -> None:
    """Join the cluster at ``address`` ('auto' on one of its nodes, or host:port), or start a local Ray (``None``);
    an unreachable address is refused before anything is written."""
    import ray

    if ray.is_initialized():
        return
    if address is None:  # a local Ray of this machine's size; its dashboard stays off (nothing listens)
        ray.init(include_dashboard=False, configure_logging=False, log_to_driver=False)
        return
    if address != "auto" and not _listening(address):  # ray.init would wait minutes before failing
        raise FieldError("ray_address", address, "the host:port of a running Ray head (`ray start --head` "
                                                 "prints it), or 'auto' on a node of the cluster")
    ray.init(address=address, configure_logging=False, log_to_driver=False)


def _listening(address: str) -> bool:
    host, _, port = address.split("://")[-1].rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
        return True
    except (OSError, ValueError):
        return False
