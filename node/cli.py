"""The ``pacs-node`` command line: parser and dispatch; each command lives in ``node.commands``.

Errors the node raises on purpose (``NodeError``) are printed as one line and exit 1; anything else is
a bug: one line says so (with ``--debug``, the traceback) and the exit code is 70.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from node import __version__, logs
from node.commands import analyse, audit, echo, jobs, models, rules, send, serve, synth, web
from node.commands import config as check_config
from node.errors import NodeError

EXIT_ERROR = 1
EXIT_SOFTWARE = 70


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pacs-node",
        description="DICOM integration node: receives studies, analyses them with ONNX models described by "
        "model cards, and sends DICOM SEG + Comprehensive 3D SR results back to the PACS.",
        epilog="Run 'pacs-node COMMAND --help' for each command's options.",
    )
    parser.add_argument("--version", action="version", version=f"pacs-node {__version__}")
    parser.add_argument(
        "--log-level",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        type=str.upper,
        help="DEBUG, INFO, WARNING or ERROR (default: WARNING; serve and worker: the config's [logging] level)",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks of internal errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve.add_parsers(sub)
    jobs.add_parsers(sub)
    echo.add_parser(sub)
    send.add_parser(sub)
    rules.add_parser(sub)
    audit.add_parser(sub)
    analyse.add_parser(sub)
    synth.add_parser(sub)
    models.add_parser(sub)
    check_config.add_parser(sub)
    web.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logs.setup(args.log_level or "WARNING")
    try:
        code: int = args.func(args)
        return code
    except NodeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`pacs-node jobs list | head`): not an error. Point stdout at /dev/null so
        # the interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:
        if args.debug:
            raise
        print(
            f"internal error: {type(exc).__name__}: {exc} (a bug: please report it; --debug shows where)",
            file=sys.stderr,
        )
        return EXIT_SOFTWARE
