"""``rota leader``: who leads (epoch, subleaders); ``rota leader degrade``."""

from __future__ import annotations

import argparse
import json

help = "show the leader and subleaders; degrade the leader"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from rota.cli.client import add_api_args

    add_api_args(parser)
    sub = parser.add_subparsers(dest="leader_cmd")
    deg = sub.add_parser("degrade", help="ask the leader to step down for the cool-down")
    add_api_args(deg)


def handle(args: argparse.Namespace) -> int:
    from rota.cli.client import Api

    api = Api(args)
    info = (
        api.call("POST", "/leader/degrade")
        if args.leader_cmd == "degrade"
        else api.call("GET", "/leader")
    )
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    leader = info.get("leader")
    if args.leader_cmd == "degrade":
        print(f"asked {leader['worker_id']} (epoch {info['epoch']}) to step down")
        return 0
    if leader:
        print(
            f"leader:    {leader['worker_id']} on node {leader['node_id']}, epoch {info['epoch']}"
        )
    else:
        print(f"leader:    none right now (latest epoch {info['latest_epoch']})")
    for s in info["subleaders"]:
        print(f"subleader: {s['worker_id']} on node {s['node_id']}")
    return 0
