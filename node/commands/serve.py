"""``pacs-node serve`` and ``pacs-node worker``: the node's long-running processes."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from node import logs
from node.commands.config import check_models
from node.config import NodeConfig, load_config
from node.errors import ConfigError

log = logging.getLogger(__name__)


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "serve",
        help="run the node: DICOM receiver, completion, routing, sender and analysis workers",
        description="Listen for DICOM associations (C-ECHO, C-STORE) as the config's node.ae_title on "
        "node.bind:node.port, store every instance durably, analyse complete studies with the configured models "
        "in [workers] count worker processes and send the SEG + SR results to the peers in "
        "analysis.send_results_to. SIGTERM (systemctl stop) drains: no new associations, open ones get "
        "limits.drain_timeout_s to finish, running jobs are given back; a restart resumes every queued job and "
        "unsent result.",
        epilog="example: pacs-node serve --config config/node.toml   (then: echoscu -aec PACSNODE 127.0.0.1 11112)",
    )
    p.add_argument("--config", type=Path, required=True, metavar="FILE", help="the node's TOML config file")
    p.set_defaults(func=serve)
    w = sub.add_parser(
        "worker",
        help="run one analysis worker process (when [workers] count = 0, e.g. under systemd)",
        description="Claim 'analyse' jobs from the job store in node.data_dir, run the models on the study's "
        "series, write SEG + SR into the outbox and queue their sends. Runs beside 'serve' (same config, same "
        "data dir). SIGTERM gives the running job back and exits.",
        epilog="example: pacs-node worker --config config/node.toml",
    )
    w.add_argument("--config", type=Path, required=True, metavar="FILE", help="the node's TOML config file")
    w.add_argument("--parent-pid", type=int, default=None, help=argparse.SUPPRESS)  # set by serve for its children
    w.set_defaults(func=worker)
    s = sub.add_parser(
        "sender",
        help="run the sender process (serve starts it; you need not)",
        description="Claim 'send:<peer>' jobs from the job store in node.data_dir and C-STORE them to each peer "
        "with sender.associations_per_peer associations, retrying with backoff and parking what cannot be sent. "
        "serve starts one sender process itself, so that sending and receiving run on different cores. SIGTERM "
        "finishes the instance in flight and gives the other claimed sends back.",
        epilog="example: pacs-node sender --config config/node.toml",
    )
    s.add_argument("--config", type=Path, required=True, metavar="FILE", help="the node's TOML config file")
    s.add_argument("--parent-pid", type=int, default=None, help=argparse.SUPPRESS)  # set by serve for its children
    s.set_defaults(func=sender)

    r = sub.add_parser(
        "receiver",
        help="run one more receiver process on serve's port (serve starts them; you need not)",
        description="Accept associations on node.port beside serve's own receiver (SO_REUSEPORT), with the same "
        "policy, limits (counted across every receiver) and durable receive path, its journal in "
        "journal/p<pid>/ under node.data_dir. serve starts [receive] processes - 1 of them. SIGTERM stops "
        "listening and gives open associations limits.drain_timeout_s to finish.",
        epilog="example: pacs-node receiver --config config/node.toml",
    )
    r.add_argument("--config", type=Path, required=True, metavar="FILE", help="the node's TOML config file")
    r.add_argument("--parent-pid", type=int, default=None, help=argparse.SUPPRESS)  # set by serve for its children
    r.set_defaults(func=receiver)


def _config(args: argparse.Namespace) -> NodeConfig:
    config = load_config(args.config)
    _, problems = check_models(config, str(args.config))
    if problems:
        raise ConfigError("\n".join(problems))
    # The command line's --log-level wins; otherwise the config's [logging] level.
    logs.setup(args.log_level or config.logging.level)
    return config


def serve(args: argparse.Namespace) -> int:
    from node.app import NodeService  # here, not at the top: see node.app's imports
    from node.processes import stop_on_signals

    config = _config(args)
    service = NodeService(config, args.config.resolve(), log_level=args.log_level or config.logging.level)
    stop_on_signals(service.stop)
    service.run()
    return 0


def receiver(args: argparse.Namespace) -> int:
    from node.children import run_receiver

    run_receiver(_config(args), args.parent_pid)
    return 0


def sender(args: argparse.Namespace) -> int:
    from node.children import run_sender

    run_sender(_config(args), args.parent_pid)
    return 0


def worker(args: argparse.Namespace) -> int:
    from node.children import run_worker

    run_worker(_config(args), args.parent_pid)
    return 0
