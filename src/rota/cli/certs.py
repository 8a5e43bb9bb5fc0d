"""``rota certs init``: a cluster CA and node certificates for the control plane."""

from __future__ import annotations

import argparse
from pathlib import Path

from rota.cli.base import env_default, env_help

help = "make the control plane's CA and node certificates"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="certs_cmd", required=True)
    init = sub.add_parser(
        "init", help="create a CA (or reuse the one in --dir) and node certificates"
    )
    init.add_argument(
        "--dir",
        default=env_default("ROTA_TLS_DIR", "/etc/rota/tls"),
        help=env_help("where to write ca.crt, ca.key, tls.crt, tls.key", "ROTA_TLS_DIR"),
    )
    init.add_argument(
        "--node",
        action="append",
        default=[],
        help="a node name (DNS name or IP) to certify; repeat; each also gets DIR/NAME/",
    )


def handle(args: argparse.Namespace) -> int:
    from rota.control.certs import init_certs
    from rota.control.tls import CLUSTER_NAME
    from rota.private import make_private, private_umask

    private_umask()
    make_private(Path(args.dir))
    for d in init_certs(Path(args.dir), args.node):
        print(f"wrote {d / 'tls.crt'}, {d / 'tls.key'}, {d / 'ca.crt'}")
    print(f"CA key: {Path(args.dir) / 'ca.key'} (keep it secret; it signs new node certificates)")
    print(f"every certificate also names {CLUSTER_NAME!r}, the name clients verify")
    return 0
