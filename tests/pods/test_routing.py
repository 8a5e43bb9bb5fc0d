"""The routing rules on the pure components (no processes, no NATS), and the
restart backoff."""

from __future__ import annotations

from rota.pods.config import Mode
from rota.pods.replicaset import Backoff
from rota.pods.routing import TopicMessage, TopicSubscriptionRegistry


def registry(*tasks: tuple[str, Mode, list[str], int]) -> TopicSubscriptionRegistry:
    reg = TopicSubscriptionRegistry(queue_limit=1000)
    for name, mode, topics, n in tasks:
        reg.register_task(name, mode, topics)
        for i in range(n):
            reg.add_instance(name, f"{name}{i}")
    return reg


def idle_all(reg: TopicSubscriptionRegistry, *pods: str) -> list[str]:
    return [d.pod_id for p in pods for d in reg.instance_idle(p)]


def msg(data: str, topic: str = "work", origin: str | None = None) -> TopicMessage:
    return TopicMessage(topic, data, reply=f"inbox.{data}", origin_task=origin)


def test_instances_start_busy_and_messages_wait() -> None:
    reg = registry(("w", Mode.ROUND_ROBIN, ["work"], 3))
    assert reg.route(msg("1")) == []
    assert reg.queued("w") == 1
    (d,) = reg.instance_idle("w1")
    assert (d.pod_id, d.message.data) == ("w1", "1")
    assert reg.queued("w") == 0


def test_strict_rotation_over_idle_instances() -> None:
    reg = registry(("w", Mode.ROUND_ROBIN, ["work"], 3))
    idle_all(reg, "w0", "w1", "w2")
    got = []
    for i in range(9):
        (d,) = reg.route(msg(str(i)))
        got.append(d.pod_id)
        idle_all(reg, d.pod_id)
    assert got == ["w0", "w1", "w2"] * 3


def test_rotation_skips_busy_instances() -> None:
    reg = registry(("w", Mode.ROUND_ROBIN, ["work"], 3))
    idle_all(reg, "w0", "w1", "w2")
    assert [d.pod_id for d in reg.route(msg("a"))] == ["w0"]  # w0 now busy
    assert [d.pod_id for d in reg.route(msg("b"))] == ["w1"]
    idle_all(reg, "w0")
    assert [d.pod_id for d in reg.route(msg("c"))] == ["w2"]
    assert [d.pod_id for d in reg.route(msg("d"))] == ["w0"]
    assert reg.route(msg("e")) == []  # all busy: queued
    assert idle_all(reg, "w2") == ["w2"]


def test_queue_is_fifo_and_drains_as_instances_report_idle() -> None:
    reg = registry(("w", Mode.ROUND_ROBIN, ["work"], 2))
    for i in range(5):
        assert reg.route(msg(str(i))) == []
    delivered = []
    for pod in ["w0", "w1", "w0", "w1", "w0", "w1"]:
        delivered += [d.message.data for d in reg.instance_idle(pod)]
    assert delivered == ["0", "1", "2", "3", "4"]
    assert reg.queued("w") == 0


def test_each_message_is_delivered_exactly_once_to_an_idle_instance() -> None:
    import random

    rnd = random.Random(7)
    reg = registry(("w", Mode.ROUND_ROBIN, ["work"], 3))
    busy = {"w0", "w1", "w2"}
    seen: list[str] = []

    def take(deliveries):  # type: ignore[no-untyped-def]
        for d in deliveries:
            assert d.pod_id not in busy, "delivered to a busy instance"
            busy.add(d.pod_id)
            seen.append(d.message.data)

    for i in range(1000):
        take(reg.route(msg(str(i))))
        if rnd.random() < 0.7 and busy:
            pod = rnd.choice(sorted(busy))
            busy.discard(pod)
            take(reg.instance_idle(pod))
    while len(seen) < 1000:
        pod = sorted(busy)[0]
        busy.discard(pod)
        take(reg.instance_idle(pod))
    assert seen == [str(i) for i in range(1000)]


def test_every_subscribed_task_gets_a_copy_but_not_its_own() -> None:
    reg = registry(
        ("a", Mode.ROUND_ROBIN, ["news"], 1),
        ("b", Mode.ROUND_ROBIN, ["news"], 1),
        ("c", Mode.ROUND_ROBIN, ["other"], 1),
    )
    idle_all(reg, "a0", "b0", "c0")
    assert sorted(d.pod_id for d in reg.route(msg("x", "news"))) == ["a0", "b0"]
    idle_all(reg, "a0", "b0")
    assert [d.pod_id for d in reg.route(msg("y", "news", origin="a"))] == ["b0"]


def test_broadcast_reaches_every_instance_each_when_idle() -> None:
    reg = registry(("b", Mode.BROADCAST, ["ev"], 3))
    idle_all(reg, "b0", "b2")
    assert sorted(d.pod_id for d in reg.route(msg("1", "ev"))) == ["b0", "b2"]
    assert reg.queued("b") == 1  # b1's mailbox
    assert [(d.pod_id, d.message.data) for d in reg.instance_idle("b1")] == [("b1", "1")]


def test_result_goes_back_to_the_requester_of_that_instance() -> None:
    reg = registry(("w", Mode.ROUND_ROBIN, ["job"], 2))
    idle_all(reg, "w0", "w1")
    (d0,) = reg.route(TopicMessage("job", "r1", reply="inbox.r1"))
    (d1,) = reg.route(TopicMessage("job", "r2", reply="inbox.r2"))
    assert reg.take_reply(d1.pod_id, "job.result") == (True, "inbox.r2")
    assert reg.take_reply(d0.pod_id, "job.result") == (True, "inbox.r1")
    assert reg.take_reply(d0.pod_id, "job.result") == (False, None)
    assert reg.take_reply(d0.pod_id, "other.result") == (False, None)


def test_removed_instance_is_skipped_and_queue_kept() -> None:
    reg = registry(("w", Mode.ROUND_ROBIN, ["work"], 2))
    reg.route(msg("1"))
    reg.remove_instance("w0")
    assert reg.instance_idle("w0") == []
    assert [d.pod_id for d in reg.instance_idle("w1")] == ["w1"]


def test_queue_limit_drops_and_counts() -> None:
    reg = TopicSubscriptionRegistry(queue_limit=2)
    reg.register_task("w", Mode.ROUND_ROBIN, ["work"])
    for i in range(5):
        reg.route(msg(str(i)))
    assert reg.queued("w") == 2
    assert reg.dropped_count("w") == 3


def test_latest_per_topic() -> None:
    reg = registry(("w", Mode.ROUND_ROBIN, ["work"], 1))
    assert reg.latest("work") is None
    reg.route(msg("1"))
    reg.route(msg("2"))
    assert reg.latest("work") == "2"


def test_backoff_grows_caps_and_resets() -> None:
    b = Backoff(initial=0.1, factor=2, maximum=1.0, stable_after=10)
    assert [b.delay(n) for n in range(1, 7)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert b.failures_after(4, None) == 5  # could not even start
    assert b.failures_after(4, 0.5) == 5  # died quickly
    assert b.failures_after(4, 60.0) == 1  # ran long enough: a fresh start
