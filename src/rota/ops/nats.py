"""The NATS cluster page: nodes, the meta leader, each rota stream's replicas and
lag, and the problems :func:`rota.bus.cluster.find_problems` names, translated."""

from __future__ import annotations

import logging
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.utils.translation import gettext_lazy as _

from rota.bus.cluster import KINDS, ClusterReport, Problem, cluster_report
from rota.ops.access import ops_required
from rota.ops.render import page

log = logging.getLogger(__name__)

#: rota.bus.cluster.PROBLEMS, translated: code -> (what, hint).
PROBLEM_TEXT = {
    "no_meta_leader": (
        _("JetStream has no meta leader: the cluster lost its quorum"),
        _(
            "start the stopped nodes (`rota nats up --dir ...` on their machines): a cluster "
            "of N nodes needs more than N/2 of them up"
        ),
    ),
    "node_offline": (
        _("NATS node {node} is offline"),
        _(
            "start it (`rota nats up` on its machine); while it is down, every replica it "
            "holds is missing"
        ),
    ),
    "node_behind": (
        _("NATS node {node} is behind the meta leader (lag {lag})"),
        _(
            "it catches up by itself; if it stays behind, read its log and check the network "
            "between the nodes"
        ),
    ),
    "missing": (
        _("{kind} {resource} does not exist"),
        _(
            "start a rota process once (workers and the web server create it), or restore a "
            "backup with `rota nats restore DIR`"
        ),
    ),
    "no_leader": (
        _("{kind} {resource} has no leader"),
        _("most of its replicas are down: start the nodes that hold them"),
    ),
    "replicas_missing": (
        _("{kind} {resource} has {present} of its {replicas} replicas"),
        _(
            "JetStream places a missing replica on a free node; add one with `rota nats join` "
            "if there is none"
        ),
    ),
    "replica_offline": (
        _("{kind} {resource}: its replica on {node} is offline"),
        _("start node {node}; until then the other replicas carry on"),
    ),
    "replica_behind": (
        _("{kind} {resource}: its replica on {node} is behind (lag {lag})"),
        _(
            "a busy replica catches up by itself; one that stays behind points at node "
            "{node}'s disk or network"
        ),
    ),
    "too_few_nodes": (
        _("{kind} {resource} wants {replicas} replicas but the cluster has {nodes} node(s)"),
        _("add nodes (`rota nats join`) or lower ROTA_NATS_REPLICAS"),
    ),
    "replicas_differ": (
        _("{kind} {resource} has {replicas} replica(s), rota is set to {want}"),
        _(
            "`rota nats scale` sets it in place (so does the next start of a rota process), "
            "or set ROTA_NATS_REPLICAS to what the cluster has"
        ),
    ),
}

#: rota.bus.cluster.KINDS, translated, by the kind's code.
KIND_TEXT = {"stream": _("stream"), "kv": _("KV bucket"), "objects": _("object store")}


def translate(p: Problem) -> dict[str, Any]:
    """A problem in the request's language (English text when a code is unknown)."""
    by_label = {label: KIND_TEXT[code] for code, label in KINDS.items()}
    params = {**p.params}
    if "kind" in params:
        params["kind"] = by_label.get(params["kind"], params["kind"])
    what, hint = PROBLEM_TEXT.get(p.code, (p.what, p.hint))
    return {
        "code": p.code,
        "warning": p.warning,
        "what": str(what).format(**params),
        "hint": str(hint).format(**params),
    }


async def nats_view() -> dict[str, Any]:
    """The cluster report and its translated problems, or why NATS could not be read."""
    from rota.api.app import get_bus
    from rota.conf import get_settings

    try:
        bus = await get_bus()
        report: ClusterReport = await cluster_report(
            bus.nc, monitor_urls=get_settings().nats_monitor_urls
        )
    except Exception as exc:  # an unreachable NATS is shown, not raised
        log.warning("ops: cannot read the NATS cluster: %s", exc)
        return {"nats_error": str(exc) or type(exc).__name__, "report": None}
    streams = [{"s": s, "kind": KIND_TEXT[s.kind]} for s in report.streams]
    problems = [translate(p) for p in report.problems]
    return {"report": report, "streams": streams, "problems": problems}


@ops_required()
async def nats_page(request: HttpRequest) -> HttpResponse:
    return page(
        request,
        "rota_ops/nats.html",
        await nats_view(),
        section="nats",
        fragment="rota_ops/_nats.html",
    )
