"""The web process: operators' console, radiologists' triage worklist, JSON API, ``/metrics``, health.

It runs in its own process (``pacs-node web``, started and supervised by serve), so HTTP never competes
with the receiver for the GIL. It reads the index (read-only) and the job store, and writes only what
users do: retry and cancel through the job store's API, feedback into ``feedback.sqlite3``, each in the
audit trail with the user's name. Layout: :mod:`~node.web.app` (the ASGI app), :mod:`~node.web.auth`
(users, tokens, sessions, CSRF, login limit), :mod:`~node.web.queries` and :mod:`~node.web.results` (the
query layer the pages and the API share), :mod:`~node.web.actions`, :mod:`~node.web.keyimage`,
:mod:`~node.web.metrics`, ``routers/`` (one per area), ``templates/`` and ``static/``.
"""

# serve hands its web process the one-time login token in this variable (never on the command line).
ONE_TIME_ENV = "PACS_NODE_WEB_LOGIN_TOKEN"
