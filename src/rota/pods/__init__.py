"""Pods and topics (DESIGN §6, seed 002).

Long-running processes ("pods") speak the MiclowStdIO line protocol over
stdin/stdout; a replica set per task keeps ``desired_instances`` of them running;
topics are NATS subjects (docs/pods.md lists every one).

Modules, from pure to I/O:

- :mod:`rota.pods.protocol`   the line protocol: parser and encoders (pure)
- :mod:`rota.pods.subjects`   topic ↔ subject mapping, every NATS name (pure)
- :mod:`rota.pods.config`     the TOML config (tomllib)
- :mod:`rota.pods.routing`    PodStateManager, TopicLoadBalancer,
                              TopicSubscriptionRegistry (pure decisions)
- :mod:`rota.pods.replicaset` ReplicaSetController and its Backoff
- :mod:`rota.pods.process`    a pod's child process (or terminal), behind PodIO
- :mod:`rota.pods.host`       PodHost: all of the above on NATS
- :mod:`rota.pods.client`     publish(), latest(), hosts_status()
- :mod:`rota.pods.executor`   PodExecutor, the worker's ``pod`` kind
"""

from __future__ import annotations

from rota.pods.client import hosts_status, latest, publish
from rota.pods.config import Lifecycle, Mode, PodProtocol, PodsConfig, TaskSpec, load_config
from rota.pods.errors import (
    InvalidTopic,
    NoSubscribers,
    PodConfigError,
    PodError,
    PodStartError,
    ResultTimeout,
)
from rota.pods.host import PodHost
from rota.pods.replicaset import Backoff

__all__ = [
    "Backoff",
    "InvalidTopic",
    "Lifecycle",
    "Mode",
    "NoSubscribers",
    "PodConfigError",
    "PodError",
    "PodHost",
    "PodProtocol",
    "PodStartError",
    "PodsConfig",
    "ResultTimeout",
    "TaskSpec",
    "hosts_status",
    "latest",
    "load_config",
    "publish",
]
