"""PodHost: runs a pods config on this machine and joins it to the topics on NATS.

It owns one :class:`~rota.pods.replicaset.ReplicaSetController` per task, one
:class:`~rota.pods.routing.TopicSubscriptionRegistry` (with its balancer and pod
state), and the NATS subscriptions:

- per task and subscribed topic, ``rota.topic.<topic>``: with the queue group
  ``rota.pods.<task>`` for a round_robin task (its instances on every host share
  the load), without one for a broadcast task (every host gets every message);
- ``rota.pods.reply.<host_id>.>``: ``.result`` replies for this host's pods;
- ``rota.pods.status``: answers with :meth:`PodHost.status`.

Every message a pod publishes goes out through NATS, also when a local task
subscribes: one path, the same rules on one host and on many. Its reply subject
``rota.pods.reply.<host_id>.<task>.<pod_id>`` says where its ``.result`` goes and
which task sent it (a task never receives its own messages). The latest message
of every topic is also put in the ``rota_topics`` KV bucket, for ``system.pull``
on any host. See docs/pods.md.

The worker embeds it (``start(bus)`` / ``stop()`` / ``status()``); ``rota pods run``
runs it alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import orjson
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from rota.bus.connection import Bus
from rota.bus.resources import cluster_size, replicas_for_cluster
from rota.pods import protocol as proto
from rota.pods import subjects
from rota.pods.config import Mode, PodProtocol, PodsConfig, TaskSpec
from rota.pods.errors import InvalidTopic
from rota.pods.process import PodIO, TerminalIO, pod_environ, spawn_process
from rota.pods.replicaset import Backoff, ReplicaSetController
from rota.pods.routing import DEFAULT_QUEUE_LIMIT, Delivery, TopicMessage, TopicSubscriptionRegistry

log = logging.getLogger(__name__)

Echo = Callable[[str], None]

#: Output chunks waiting to be handled at which a pod's pipes stop being read,
#: and below which reading resumes.
PAUSE_AT = 1000
RESUME_AT = 100


def _print(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class PodRuntime:
    """One running instance: its I/O, its two line parsers, and the task that
    handles what it prints, in order (a ``T.result`` before the ``system.idle``
    that follows it)."""

    def __init__(self, host: PodHost, spec: TaskSpec, pod_id: str, slot: int) -> None:
        self.host = host
        self.spec = spec
        self.pod_id = pod_id
        self.slot = slot
        self.label = f"{spec.name}-{pod_id[:8]}"
        self.io: PodIO | None = None
        self.reply_to = subjects.reply_subject(host.host_id, spec.name, pod_id)
        self.parsers = {"stdout": proto.LineParser(), "stderr": proto.LineParser()}
        self.events: asyncio.Queue[tuple[str, list[proto.Event]] | None] = asyncio.Queue()
        self.consumer: asyncio.Task[None] | None = None
        self.paused = False

    @property
    def pid(self) -> int | None:
        return self.io.pid if self.io else None

    def on_output(self, stream: str, data: bytes | None) -> None:
        parser = self.parsers[stream]
        events = parser.feed(data) if data is not None else parser.close()
        if events:
            self.events.put_nowait((stream, events))
            if not self.paused and self.events.qsize() > PAUSE_AT and self.io is not None:
                # A pod printing faster than NATS takes it: stop reading its
                # pipes (it blocks on write) instead of growing without bound.
                self.paused = True
                self.io.pause_reading()

    async def consume(self) -> None:
        while True:
            item = await self.events.get()
            if item is None:
                return
            if self.paused and self.events.qsize() < RESUME_AT and self.io is not None:
                self.paused = False
                self.io.resume_reading()
            stream, events = item
            for event in events:
                try:
                    await self.host._handle(self, stream, event)
                except Exception:  # one bad message must not silence the pod
                    log.exception("pod %s: cannot handle %r", self.label, event)

    async def wait(self) -> int | None:
        assert self.io is not None
        code = await self.io.wait()
        self.host.registry.retire_instance(self.pod_id)
        if self.paused:
            self.io.resume_reading()
        self.events.put_nowait(None)
        if self.consumer is not None:
            await self.consumer
        self.host._forget(self)
        return code

    async def stop(self, grace: float) -> None:
        if self.io is not None:
            await self.io.stop(grace)


class PodHost:
    """Runs the tasks of a pods config on this host.

    :param config: the loaded config (:func:`rota.pods.config.load_config`).
    :param node_id: this machine's name, shown in the status.
    :param backoff: restart delays of crashed pods.
    :param stop_grace: seconds between SIGTERM and SIGKILL at shutdown.
    :param interactive: run Interactive tasks (the host's stdin is theirs);
        off when embedded in a worker, which has no terminal.
    :param echo: where ``view_stdout``/``view_stderr`` lines and Interactive
        output are written (default: this process's stdout).
    :param queue_limit: messages a task (or a broadcast instance) may hold
        waiting; beyond it new ones are dropped and counted in the status.
    :param latest_replicas: replicas of the ``rota_topics`` bucket if created
        (0: from the cluster's size, as rota's other buckets).
    """

    def __init__(
        self,
        config: PodsConfig,
        *,
        node_id: str | None = None,
        backoff: Backoff | None = None,
        stop_grace: float = 5.0,
        interactive: bool = False,
        echo: Echo | None = None,
        queue_limit: int = DEFAULT_QUEUE_LIMIT,
        latest_replicas: int = 0,
        terminal_stdin: Any = None,
    ) -> None:
        self.config = config
        self.node_id = node_id or socket.gethostname()
        self.host_id = f"{subjects.escape_token(self.node_id)}-{uuid.uuid4().hex[:8]}"
        self.backoff = backoff or Backoff()
        self.stop_grace = stop_grace
        self.interactive = interactive
        self.echo = echo or _print
        self.latest_replicas = latest_replicas
        self.terminal_stdin = terminal_stdin
        self.registry = TopicSubscriptionRegistry(queue_limit=queue_limit)
        self.sets: dict[str, ReplicaSetController] = {}
        self.pods: dict[str, PodRuntime] = {}
        self.bus: Bus | None = None
        self._kv: Any = None
        self._subs: list[Subscription] = []
        self._started = False
        self._stopped = False
        self.started_at = time.time()
        self.published = 0
        for spec in config.tasks:
            topics = spec.subscribe_topics if self._runs(spec) else ()
            self.registry.register_task(spec.name, spec.mode, topics)

    def _runs(self, spec: TaskSpec) -> bool:
        return spec.protocol is not PodProtocol.INTERACTIVE or self.interactive

    # -- lifecycle -------------------------------------------------------------------

    async def start(self, bus: Bus) -> None:
        """Start every task's pods, then subscribe to their topics."""
        if self._started:
            return
        self._started = True
        self.bus = bus
        self._kv = await self._latest_bucket()
        for spec in self.config.tasks:
            if not self._runs(spec):
                log.info("task %s: Interactive, skipped (no terminal here)", spec.name)
                continue
            rs = ReplicaSetController(spec, self._start_pod, backoff=self.backoff)
            self.sets[spec.name] = rs
            rs.start()
        # Pods start busy, so a message arriving before they are ready queues.
        nc = bus.nc
        for spec in self.config.tasks:
            if spec.name not in self.sets:
                continue
            queue = subjects.queue_group(spec.name) if spec.mode is Mode.ROUND_ROBIN else ""
            for topic in spec.subscribe_topics:
                sub = await nc.subscribe(
                    subjects.topic_subject(topic), queue=queue, cb=self._topic_handler(spec, topic)
                )
                self._subs.append(sub)
        self._subs.append(
            await nc.subscribe(subjects.reply_prefix(self.host_id) + ".>", cb=self._on_reply)
        )
        self._subs.append(await nc.subscribe(subjects.STATUS_SUBJECT, cb=self._on_status))
        await nc.flush()
        log.info(
            "pod host %s started: %d task(s), %d pod(s) desired",
            self.host_id,
            len(self.sets),
            sum(rs.spec.desired_instances for rs in self.sets.values()),
        )

    async def _latest_bucket(self) -> Any:
        from nats.js.api import KeyValueConfig, StorageType
        from nats.js.errors import BucketNotFoundError

        assert self.bus is not None
        try:
            return await self.bus.js.key_value(subjects.LATEST_BUCKET)
        except BucketNotFoundError:
            pass
        try:
            # Memory storage: a cache of recent traffic, written on every
            # publish; losing it with the server loses nothing else.
            return await self.bus.js.create_key_value(
                KeyValueConfig(
                    bucket=subjects.LATEST_BUCKET,
                    history=1,
                    storage=StorageType.MEMORY,
                    max_bytes=256 * 1024 * 1024,
                    replicas=self.latest_replicas
                    or replicas_for_cluster(cluster_size(self.bus.nc)),
                    description="rota pods: latest message of each topic",
                )
            )
        except Exception as exc:  # system.pull falls back to what this host saw
            log.warning("cannot create KV bucket %s: %s", subjects.LATEST_BUCKET, exc)
            return None

    async def stop(self) -> None:
        """Unsubscribe, then stop every pod (SIGTERM, SIGKILL after the grace).
        Idempotent; messages still queued here are dropped."""
        if self._stopped:
            return
        self._stopped = True
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        self._subs.clear()
        await asyncio.gather(*(rs.stop(self.stop_grace) for rs in self.sets.values()))
        if self.bus is not None and not self.bus.nc.is_closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.bus.nc.flush(), 5)
        log.info("pod host %s stopped", self.host_id)

    # -- pods ------------------------------------------------------------------------

    async def _start_pod(self, spec: TaskSpec, slot: int) -> PodRuntime:
        pod_id = uuid.uuid4().hex
        rt = PodRuntime(self, spec, pod_id, slot)
        if spec.protocol is PodProtocol.INTERACTIVE:
            rt.io = TerminalIO(
                rt.on_output, show=lambda frame: self._show(rt, frame), stdin=self.terminal_stdin
            )
        else:
            rt.io = await spawn_process(spec, pod_environ(spec, pod_id), rt.on_output)
        self.pods[pod_id] = rt
        self.registry.add_instance(spec.name, pod_id)
        rt.consumer = asyncio.create_task(rt.consume())
        if spec.protocol is PodProtocol.INTERACTIVE:
            self._apply(self.registry.instance_idle(pod_id))  # a terminal is always ready
        log.info("task %s: started pod %s (pid %s)", spec.name, rt.label, rt.pid)
        return rt

    def _forget(self, rt: PodRuntime) -> None:
        self.registry.remove_instance(rt.pod_id)
        self.pods.pop(rt.pod_id, None)

    def _show(self, rt: PodRuntime, frame: bytes) -> None:
        for f in proto.FrameDecoder().feed(frame):
            self.echo(f"[{rt.label}] {f.topic}: {f.data}")

    def _apply(self, deliveries: list[Delivery]) -> None:
        """Write each delivery to its pod's stdin."""
        while deliveries:
            more: list[Delivery] = []
            for d in deliveries:
                rt = self.pods.get(d.pod_id)
                if rt is None or rt.io is None:
                    continue
                rt.io.write(proto.encode_frame(d.message.topic, d.message.data))
                if rt.spec.protocol is PodProtocol.INTERACTIVE:
                    more += self.registry.instance_idle(d.pod_id)
            deliveries = more

    # -- from NATS -------------------------------------------------------------------

    def _topic_handler(self, spec: TaskSpec, topic: str) -> Callable[[Msg], Any]:
        task = spec.name
        task_token = subjects.escape_token(task)
        registry = self.registry

        async def on_message(msg: Msg) -> None:
            reply = msg.reply or None
            origin = subjects.task_of_reply(reply) if reply else None
            if origin == task_token:
                return  # a task never receives what its own pods publish
            if origin is not None:
                origin = subjects.unescape_token(origin)
            message = TopicMessage(topic, msg.data.decode("utf-8", "replace"), reply, origin)
            self._apply(registry.route(message, [task]))

        return on_message

    async def _on_reply(self, msg: Msg) -> None:
        headers = msg.headers
        if headers and headers.get("Status"):
            # The server's "503 no responders": what a pod published (with its
            # reply subject) had no subscriber. Nothing to tell the pod.
            return
        pod_id = msg.subject.rsplit(".", 1)[-1]
        rt = self.pods.get(pod_id)
        if rt is None or rt.io is None:
            log.debug("reply for pod %s, which is gone", pod_id)
            return
        encoded = (headers or {}).get(subjects.TOPIC_HEADER, "")
        topic = subjects.decode_topic(encoded) if encoded else "result"
        # A reply is not a new message: it reaches the pod busy or idle and
        # leaves its state alone (the requester usually waits for it, busy).
        rt.io.write(proto.encode_frame(topic, msg.data.decode("utf-8", "replace")))

    async def _on_status(self, msg: Msg) -> None:
        if msg.reply:
            await self.bus.nc.publish(msg.reply, orjson.dumps(self.status()))  # type: ignore[union-attr]

    # -- from pods -------------------------------------------------------------------

    async def _handle(self, rt: PodRuntime, stream: str, event: proto.Event) -> None:
        spec = rt.spec
        if isinstance(event, proto.Plain):
            view = spec.view_stdout if stream == "stdout" else spec.view_stderr
            if view:
                self.echo(f"[{rt.label} {stream}] {event.text}")
            topic = spec.stdout_topic if stream == "stdout" else spec.stderr_topic
            await self._publish(rt, topic, event.text)
            return
        topic, data = event.topic, event.data
        if topic.startswith(proto.SYSTEM_PREFIX):
            await self._system(rt, topic, data)
            return
        if proto.is_result(topic):
            answered, reply = self.registry.take_reply(rt.pod_id, topic)
            if answered and reply:
                await self._reply(reply, topic, data)
                return
        await self._publish(rt, topic, data)

    async def _system(self, rt: PodRuntime, command: str, data: str) -> None:
        if command == proto.IDLE:
            self._apply(self.registry.instance_idle(rt.pod_id))
        elif command == proto.PULL:
            rt.io.write(proto.pull_reply(data, await self.latest(data)))  # type: ignore[union-attr]
        else:
            rt.io.write(proto.unknown_command_reply(command))  # type: ignore[union-attr]

    async def _publish(self, rt: PodRuntime, topic: str, data: str) -> None:
        try:
            subject = subjects.topic_subject(topic)
        except InvalidTopic as exc:
            log.warning("pod %s: not published: %s", rt.label, exc)
            return
        payload = data.encode()
        nc = self.bus.nc  # type: ignore[union-attr]
        await nc.publish(subject, payload, reply=rt.reply_to)
        if self._kv is not None:
            await nc.publish(subjects.latest_subject(topic), payload)
        self.registry.record_latest(topic, data)
        self.published += 1

    async def _reply(self, reply: str, topic: str, data: str) -> None:
        nc = self.bus.nc  # type: ignore[union-attr]
        headers = None
        if reply.startswith(subjects.REPLY_PREFIX + "."):
            # A pod's inbox: its host needs the topic to frame the reply.
            headers = {subjects.TOPIC_HEADER: subjects.encode_topic(topic)}
        await nc.publish(reply, data.encode(), headers=headers)

    async def latest(self, topic: str) -> str | None:
        """The latest message on ``topic``: from the shared bucket, else from
        what this host has seen."""
        if self._kv is not None and topic:
            from nats.js.errors import KeyNotFoundError

            try:
                entry = await self._kv.get(subjects.encode_topic(topic))
                if entry.value is not None:
                    return entry.value.decode("utf-8", "replace")
            except KeyNotFoundError:
                pass
            except Exception as exc:  # bucket unreachable: use the local view
                log.debug("latest %r from KV failed: %s", topic, exc)
        return self.registry.latest(topic)

    # -- status ----------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Tasks, their instances (idle/busy, restarts, last error) and queues."""
        tasks = []
        state = self.registry.state
        for spec in self.config.tasks:
            rs = self.sets.get(spec.name)
            slots = rs.status() if rs else []
            idle = busy = 0
            for s in slots:
                pod = s["pod_id"]
                if pod is not None and pod in state:
                    is_idle = state.is_idle(pod)
                    idle += is_idle
                    busy += not is_idle
                    if is_idle:
                        s["state"] = "idle"
                    else:
                        s["state"] = "busy" if state.is_ready(pod) else "starting"
                    s["delivered"] = state.delivered(pod)
                    if spec.mode is Mode.BROADCAST:
                        s["queued"] = len(state.mailbox(pod))
            states = {s["state"] for s in slots}
            if rs is None:
                task_state = "disabled"
            elif states == {"stopped"}:
                task_state = "stopped"
            elif "crash_loop" in states:
                task_state = "crash_loop"
            elif states <= {"idle", "busy", "starting"} and idle + busy == len(slots):
                task_state = "running"
            else:
                task_state = "degraded"
            tasks.append(
                {
                    "task": spec.name,
                    "protocol": spec.protocol.value,
                    "mode": spec.mode.value,
                    "state": task_state,
                    "desired": spec.desired_instances if rs else 0,
                    "running": idle + busy,
                    "idle": idle,
                    "busy": busy,
                    "queued": self.registry.queued(spec.name),
                    "dropped": self.registry.dropped_count(spec.name),
                    "restarts": rs.restarts if rs else 0,
                    "subscribe_topics": list(spec.subscribe_topics),
                    "instances": slots,
                }
            )
        return {
            "host_id": self.host_id,
            "node_id": self.node_id,
            "started_at": self.started_at,
            "published": self.published,
            "tasks": tasks,
        }
