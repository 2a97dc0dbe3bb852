"""``pacs-node echo PEER_OR_HOST:PORT``: C-ECHO a peer of the config or an address (is it there, does it answer?)."""

from __future__ import annotations

import argparse
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

from node.config import NodeConfig, load_config
from node.send.destination import DEFAULT_CALLED_AE, Destination, resolve_destination
from node.send.scu import ScuSettings, echo

DEFAULT_CALLING_AE = "PACSNODE"
ECHO_TIMEOUT_S = 10.0


def ae_title(text: str) -> str:
    """argparse type of ``-aet``/``-aec``: an AE title, 1..16 printable ASCII characters but backslash."""
    title = text.strip(" ")
    if not 1 <= len(title) <= 16 or "\\" in title or not all(" " <= c <= "~" for c in title):
        raise argparse.ArgumentTypeError(f"'{text}' is not an AE title (1..16 printable ASCII characters, no '\\')")
    return title


def add_connection_options(p: argparse.ArgumentParser) -> None:
    """``--config``, ``-aet``, ``-aec`` (DCMTK's option names), shared by ``echo`` and ``send``."""
    p.add_argument(
        "--config", type=Path, metavar="FILE", help="node config: peer names, our AE title, timeouts and PDU size"
    )
    p.add_argument(
        "-aet",
        "--calling-aet",
        dest="aet",
        type=ae_title,
        metavar="CALLING",
        help=f"our AE title (default: node.ae_title of --config, else {DEFAULT_CALLING_AE})",
    )
    p.add_argument(
        "-aec",
        "--called-aet",
        dest="aec",
        type=ae_title,
        metavar="CALLED",
        help=f"the peer's AE title (default: the peer's ae_title from the config, else {DEFAULT_CALLED_AE})",
    )


def connection(args: argparse.Namespace, spec: str) -> tuple[Destination, ScuSettings, NodeConfig | None]:
    """The destination named by ``spec`` and the association settings, from the options and the config.

    Raises a :class:`~node.errors.NodeError` (printed as one line by the CLI) for an unknown peer, a bad
    ``HOST:PORT`` or an invalid config.
    """
    config = load_config(args.config) if args.config is not None else None
    destination = resolve_destination(spec, config.peers if config else (), args.aec)
    if config is not None:
        settings = ScuSettings.from_config(config, calling_ae=args.aet)
    else:
        settings = ScuSettings(calling_ae=args.aet or DEFAULT_CALLING_AE)
    return destination, settings, config


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "echo",
        help="C-ECHO a peer: is it reachable, and does it accept our association?",
        description=textwrap.fill(
            "Open an association with a peer (a name from --config, or HOST:PORT), send one C-ECHO and "
            "release. Prints 'echo PEER (AE@host:port): success in 12 ms' (exit 0), or one line saying why it "
            "failed: connection refused, no answer within the timeout, association rejected (with the peer's "
            "reason, e.g. 'Called AE title not recognised'), or the status it answered (exit 1).",
            width=100,
        ),
        epilog="examples:\n"
        "  pacs-node echo pacs --config config/node.toml\n"
        "  pacs-node echo 10.1.2.3:104 -aec ORTHANC -aet PACSNODE --timeout 5",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("target", metavar="PEER_OR_HOST:PORT", help="a peer name from --config, or HOST:PORT")
    add_connection_options(p)
    p.add_argument(
        "--timeout",
        type=float,
        default=ECHO_TIMEOUT_S,
        metavar="S",
        help=f"seconds to wait for the connection, the association and the answer, each (default {ECHO_TIMEOUT_S:g})",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.timeout <= 0:
        raise SystemExit("error: --timeout must be positive")
    destination, settings, _ = connection(args, args.target)
    t = args.timeout
    settings = replace(settings, acse_timeout=t, dimse_timeout=t, network_timeout=t)
    result = echo(destination, settings)
    if result.ok:
        print(f"echo {destination}: success in {result.seconds * 1000:.0f} ms")
        return 0
    print(f"echo {destination}: failed: {result.reason}", file=sys.stderr)
    return 1
