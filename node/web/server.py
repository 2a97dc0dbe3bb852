"""``pacs-node web``: the web app under uvicorn until SIGTERM (or serve, its parent, dies)."""

from __future__ import annotations

import logging
import os
import signal
import threading

from node.config import NodeConfig
from node.metrics import MULTIPROC_ENV, metrics_dir
from node.web import ONE_TIME_ENV

log = logging.getLogger(__name__)


def run_web(config: NodeConfig, stop: threading.Event) -> None:
    """Serve until SIGTERM/SIGINT (uvicorn's handlers) or until ``stop`` is set (serve died)."""
    import uvicorn

    from node.web.app import create_app

    web = config.web
    # Started by hand or by systemd: read the metrics of the node's processes where serve keeps them.
    os.environ.setdefault(MULTIPROC_ENV, str(metrics_dir(config.node.data_dir)))
    token = os.environ.pop(ONE_TIME_ENV, None)
    app = create_app(config, one_time_token=token)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=web.bind,
            port=web.port,
            ssl_certfile=str(web.certificate) if web.certificate else None,
            ssl_keyfile=str(web.private_key) if web.private_key else None,
            log_level="warning",
            access_log=False,  # URLs hold study UIDs: not for the logs
            server_header=False,
            timeout_graceful_shutdown=5,  # a slow client cannot hold up serve's drain
        )
    )

    def on_stop() -> None:
        stop.wait()
        server.should_exit = True

    threading.Thread(target=on_stop, name="web-stop", daemon=True).start()
    # uvicorn handles SIGTERM/SIGINT while it runs (a graceful stop) and then raises the signal again for
    # the handler that was there before: this one, so the process exits with status 0 as serve's others do.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    log.info("web console on %s://%s:%d", web.scheme, web.bind, web.port)
    try:
        server.run()
    finally:
        stop.set()
        app.state.ctx.close()
