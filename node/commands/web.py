"""``pacs-node web`` (the console's process; serve starts it) and ``pacs-node users hash|token``."""

from __future__ import annotations

import argparse
import getpass
import secrets
import sys
from pathlib import Path

from node.errors import NodeError


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    w = sub.add_parser(
        "web",
        help="run the web console process (serve starts it when [web] enabled = true; you need not)",
        description="Serve the web console, the triage worklist, the JSON API (/api/v1), /metrics, /healthz and "
        "/readyz on web.bind:web.port (HTTPS when web.certificate and web.private_key are set). It reads the index "
        "and the job store in node.data_dir and writes only what users do (retry, cancel, feedback).",
        epilog="example: pacs-node web --config config/node.toml",
    )
    w.add_argument("--config", type=Path, required=True, metavar="FILE", help="the node's TOML config file")
    w.add_argument("--parent-pid", type=int, default=None, help=argparse.SUPPRESS)  # set by serve for its children
    w.set_defaults(func=web)

    users = sub.add_parser(
        "users",
        help="make a password hash or a bearer token for the web console's config",
        description="'hash' reads a password from the terminal (twice, not echoed) and prints its argon2 hash for "
        "password_hash in [[web.users]]. 'token' makes a random bearer token for scripts or Prometheus and prints "
        "the token (give it to the script; it is shown once) and its sha256 for [[web.tokens]].",
        epilog="examples:\n  pacs-node users hash\n  pacs-node users token",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = users.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("hash", help="print the argon2 hash of a password read from the terminal").set_defaults(
        func=hash_password
    )
    actions.add_parser("token", help="make a bearer token and print it with its sha256").set_defaults(func=make_token)


def web(args: argparse.Namespace) -> int:
    from node.children import run_web
    from node.commands.serve import _config

    config = _config(args)
    run_web(config, args.parent_pid)
    return 0


def hash_password(args: argparse.Namespace) -> int:
    from node.web.auth import hash_password as argon2_hash

    if sys.stdin.isatty():
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            raise NodeError("the two passwords differ; nothing printed")
    else:  # piped in (a provisioning script): the first line
        password = sys.stdin.readline().rstrip("\n")
    if len(password) < 8:
        raise NodeError("a password needs at least 8 characters")
    print(argon2_hash(password))
    return 0


def make_token(args: argparse.Namespace) -> int:
    from node.web.auth import token_sha256

    token = secrets.token_urlsafe(32)
    print(f"token:  {token}")
    print(f"sha256: {token_sha256(token)}")
    return 0
