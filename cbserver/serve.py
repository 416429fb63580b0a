"""Serving the web app inside ``cbserver run``: a threaded WSGI server of its own.

Production runs the app under gunicorn instead (``gunicorn cbserver.wsgi:app``).
"""

from __future__ import annotations

import re
import threading

from flask import Flask
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

# A visitor's token in a query string (the status page's address) is a secret: not for logs.
_TOKEN_IN_QUERY = re.compile(r"([?&]token=)[^&\s]*")


class WebServerError(RuntimeError):
    """The web server could not start; the message says what to change."""


class RedactingRequestHandler(WSGIRequestHandler):
    """Logs each request as werkzeug does, with any ``token=`` value in its address hidden."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        # The request was handled: its path and line are read for the log line only now.
        self.path = redact(self.path)
        self.requestline = redact(self.requestline)
        super().log_request(code, size)


def redact(request_line: str) -> str:
    return _TOKEN_IN_QUERY.sub(r"\1[hidden]", request_line)


class WebServer:
    def __init__(self, app: Flask, host: str, port: int) -> None:
        self.app = app
        self.host = host
        self.port = port
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def start(self) -> None:
        try:
            self._server = make_server(
                self.host,
                self.port,
                self.app,
                threaded=True,
                request_handler=RedactingRequestHandler,
            )
        except OSError as exc:
            raise WebServerError(
                f"the web front end cannot listen on {self.host}:{self.port} ({exc.strerror}); "
                "set CBSERVER_WEB_PORT to a free port"
            ) from exc
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)
