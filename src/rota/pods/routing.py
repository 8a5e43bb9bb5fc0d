"""Who gets a message: the seed's PodStateManager, TopicLoadBalancer and
TopicSubscriptionRegistry. Pure: they decide and return :class:`Delivery`
objects; the pod host does the writing. One set per host.

Rules (DESIGN §6)

- Across task names every subscribed task gets a copy; a task never gets what
  its own instances published.
- ``round_robin``: one idle instance gets it, in strict rotation over the task's
  instances, skipping busy ones. When all are busy (or none runs yet) it waits in
  the task's queue (FIFO) and goes out when an instance reports idle.
- ``broadcast``: every instance gets it, each when it is idle (a per-instance
  mailbox holds it meanwhile).
- A delivery makes the instance busy; ``system.idle`` makes it idle again.
- The instance remembers where each message it was given came from, so its
  ``T.result`` goes back to that requester (:meth:`TopicSubscriptionRegistry.take_reply`).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from rota.pods.config import Mode

#: Messages one task (round_robin) or one instance (broadcast) may hold waiting.
DEFAULT_QUEUE_LIMIT = 100_000
#: Unanswered requests remembered per instance and topic; a pod that never
#: answers must not grow this forever.
MAX_OPEN_REQUESTS = 1024


@dataclass(slots=True)
class TopicMessage:
    topic: str
    data: str
    #: Where a ``.result`` to this message goes (a NATS subject), if anywhere.
    reply: str | None = None
    #: The task whose pod published it (``None``: from outside).
    origin_task: str | None = None


@dataclass(frozen=True, slots=True)
class Delivery:
    pod_id: str
    message: TopicMessage


@dataclass(slots=True)
class _Instance:
    task: str
    idle: bool = False
    #: Reported idle at least once (until then it is still starting up).
    ready: bool = False
    #: Its process has exited: it takes nothing more, but its last output
    #: (a ``.result``) is still being handled.
    retired: bool = False
    delivered: int = 0
    mailbox: deque[TopicMessage] = field(default_factory=deque)
    #: topic → replies of the messages on it not yet answered, oldest first.
    requests: dict[str, deque[str | None]] = field(default_factory=dict)


class PodStateManager:
    """Instances per task (in start order) and whether each is idle."""

    def __init__(self) -> None:
        self._by_task: dict[str, list[str]] = {}
        self._pods: dict[str, _Instance] = {}

    def add(self, task: str, pod_id: str) -> None:
        """A new instance: busy until it reports idle."""
        if pod_id in self._pods:
            raise ValueError(f"pod {pod_id} already registered")
        self._pods[pod_id] = _Instance(task)
        self._by_task.setdefault(task, []).append(pod_id)

    def remove(self, pod_id: str) -> int:
        """Forget an instance; returns how many mailbox messages it never got."""
        inst = self._pods.pop(pod_id, None)
        if inst is None:
            return 0
        self._by_task[inst.task].remove(pod_id)
        return len(inst.mailbox)

    def __contains__(self, pod_id: object) -> bool:
        return pod_id in self._pods

    def task_of(self, pod_id: str) -> str:
        return self._pods[pod_id].task

    def instances(self, task: str) -> list[str]:
        return self._by_task.get(task, [])

    def idle_instances(self, task: str) -> list[str]:
        return [p for p in self.instances(task) if self._pods[p].idle]

    def is_idle(self, pod_id: str) -> bool:
        return self._pods[pod_id].idle

    def set_idle(self, pod_id: str) -> None:
        inst = self._pods[pod_id]
        if not inst.retired:
            inst.idle = inst.ready = True

    def retire(self, pod_id: str) -> None:
        """The instance's process is gone: never idle again."""
        inst = self._pods.get(pod_id)
        if inst is not None:
            inst.idle, inst.retired = False, True

    def is_ready(self, pod_id: str) -> bool:
        return self._pods[pod_id].ready

    def delivered(self, pod_id: str) -> int:
        return self._pods[pod_id].delivered

    def mailbox(self, pod_id: str) -> deque[TopicMessage]:
        return self._pods[pod_id].mailbox

    def deliver(self, pod_id: str, message: TopicMessage) -> Delivery:
        """Hand ``message`` to ``pod_id``: it becomes busy and owes a result."""
        inst = self._pods[pod_id]
        inst.idle = False
        inst.delivered += 1
        replies = inst.requests.get(message.topic)
        if replies is None:
            replies = inst.requests[message.topic] = deque(maxlen=MAX_OPEN_REQUESTS)
        replies.append(message.reply)
        return Delivery(pod_id, message)

    def take_request(self, pod_id: str, topic: str) -> tuple[bool, str | None]:
        """The oldest unanswered message on ``topic`` given to ``pod_id``:
        ``(True, its reply)``, or ``(False, None)`` if there is none."""
        inst = self._pods.get(pod_id)
        replies = inst.requests.get(topic) if inst else None
        if not replies:
            return False, None
        return True, replies.popleft()


class TopicLoadBalancer:
    """Round robin over the idle instances of a task, and the task's queue."""

    def __init__(self, state: PodStateManager, *, queue_limit: int = DEFAULT_QUEUE_LIMIT) -> None:
        self.state = state
        self.queue_limit = queue_limit
        self._queues: dict[str, deque[TopicMessage]] = {}
        self._next: dict[str, int] = {}
        self.dropped: dict[str, int] = {}

    def select_idle_instance(self, task: str) -> str | None:
        """The next idle instance after the last one chosen (strict rotation)."""
        pods = self.state.instances(task)
        n = len(pods)
        if not n:
            return None
        start = self._next.get(task, 0) % n
        for k in range(n):
            i = (start + k) % n
            if self.state.is_idle(pods[i]):
                self._next[task] = i + 1
                return pods[i]
        return None

    def dispatch(self, task: str, message: TopicMessage) -> Delivery | None:
        """Deliver to an idle instance, or queue (``None``)."""
        queue = self._queues.setdefault(task, deque())
        if not queue:
            pod = self.select_idle_instance(task)
            if pod is not None:
                return self.state.deliver(pod, message)
        if len(queue) >= self.queue_limit:
            self.dropped[task] = self.dropped.get(task, 0) + 1
            return None
        queue.append(message)
        return None

    def process_queue(self, task: str) -> list[Delivery]:
        """Hand out queued messages until the queue is empty or all are busy."""
        queue = self._queues.get(task)
        out: list[Delivery] = []
        while queue:
            pod = self.select_idle_instance(task)
            if pod is None:
                break
            out.append(self.state.deliver(pod, queue.popleft()))
        return out

    def queue_length(self, task: str) -> int:
        return len(self._queues.get(task, ()))


class TopicSubscriptionRegistry:
    """Topics → subscribed tasks, each task's mode, and the latest message per
    topic; routes a message to the tasks and, through the balancer, to instances."""

    def __init__(
        self,
        state: PodStateManager | None = None,
        balancer: TopicLoadBalancer | None = None,
        *,
        queue_limit: int = DEFAULT_QUEUE_LIMIT,
    ) -> None:
        self.state = state or PodStateManager()
        self.balancer = balancer or TopicLoadBalancer(self.state, queue_limit=queue_limit)
        self.queue_limit = queue_limit
        self._subscribers: dict[str, list[str]] = {}
        self._modes: dict[str, Mode] = {}
        self._latest: dict[str, str] = {}
        self.dropped: dict[str, int] = {}

    # -- subscriptions -----------------------------------------------------------

    def register_task(self, task: str, mode: Mode, topics: tuple[str, ...] | list[str]) -> None:
        self._modes[task] = Mode(mode)
        for topic in topics:
            subs = self._subscribers.setdefault(topic, [])
            if task not in subs:
                subs.append(task)

    def subscribers(self, topic: str) -> list[str]:
        return self._subscribers.get(topic, [])

    def is_round_robin_mode(self, task: str) -> bool:
        return self._modes.get(task, Mode.ROUND_ROBIN) is Mode.ROUND_ROBIN

    # -- instances ---------------------------------------------------------------

    def add_instance(self, task: str, pod_id: str) -> None:
        self.state.add(task, pod_id)

    def remove_instance(self, pod_id: str) -> None:
        if pod_id in self.state:
            task = self.state.task_of(pod_id)
            lost = self.state.remove(pod_id)
            if lost:
                self.dropped[task] = self.dropped.get(task, 0) + lost

    def retire_instance(self, pod_id: str) -> None:
        """The instance exited; it stays known until :meth:`remove_instance` so
        the answers it printed last still find their requesters."""
        self.state.retire(pod_id)

    def instance_idle(self, pod_id: str) -> list[Delivery]:
        """``pod_id`` reported idle: give it (or, round robin, the task) what waits."""
        if pod_id not in self.state:
            return []
        self.state.set_idle(pod_id)
        if not self.state.is_idle(pod_id):
            return []  # retired
        task = self.state.task_of(pod_id)
        mailbox = self.state.mailbox(pod_id)
        if mailbox:
            return [self.state.deliver(pod_id, mailbox.popleft())]
        if self.is_round_robin_mode(task):
            return self.balancer.process_queue(task)
        return []

    # -- messages ----------------------------------------------------------------

    def route(self, message: TopicMessage, tasks: list[str] | None = None) -> list[Delivery]:
        """Deliver ``message`` to the subscribed ``tasks`` (default: all of them).

        Across hosts, NATS already picked which host's copy a task gets (a
        queue group per round_robin task); the host then passes ``tasks=[task]``.
        """
        self._latest[message.topic] = message.data
        subscribed = self.subscribers(message.topic)
        out: list[Delivery] = []
        for task in subscribed if tasks is None else tasks:
            if task == message.origin_task or task not in subscribed:
                continue
            if self.is_round_robin_mode(task):
                d = self.balancer.dispatch(task, message)
                if d is not None:
                    out.append(d)
                continue
            for pod in self.state.instances(task):
                if self.state.is_idle(pod):
                    out.append(self.state.deliver(pod, message))
                else:
                    box = self.state.mailbox(pod)
                    if len(box) >= self.queue_limit:
                        self.dropped[task] = self.dropped.get(task, 0) + 1
                    else:
                        box.append(message)
        return out

    def take_reply(self, pod_id: str, result_topic: str) -> tuple[bool, str | None]:
        """For ``T.result`` published by ``pod_id``: whether it answers a message
        on ``T`` that pod was given, and that message's reply address."""
        return self.state.take_request(pod_id, result_topic[: -len(".result")])

    # -- latest ------------------------------------------------------------------

    def record_latest(self, topic: str, data: str) -> None:
        self._latest[topic] = data

    def latest(self, topic: str) -> str | None:
        return self._latest.get(topic)

    # -- status ------------------------------------------------------------------

    def queued(self, task: str) -> int:
        if self.is_round_robin_mode(task):
            return self.balancer.queue_length(task)
        return sum(len(self.state.mailbox(p)) for p in self.state.instances(task))

    def dropped_count(self, task: str) -> int:
        return self.dropped.get(task, 0) + self.balancer.dropped.get(task, 0)
