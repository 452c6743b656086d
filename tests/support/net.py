"""Small network helpers for the tests, the demo and the benchmarks."""

from __future__ import annotations

import socket
import threading
from collections import Counter
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on `host` now (0.0.0.0: one that pods may reach on this machine's addresses)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


class FileServer:
    """Files served over HTTP from this machine, e.g. a reference profile for the operator the e2e tests
    run on this machine (it reads `http://127.0.0.1:<port>/...` itself; pods could not). `gets` counts the
    successful GETs of each path; any other path is 404."""

    def __init__(self, files: Mapping[str, bytes], host: str = "127.0.0.1") -> None:
        self.files = dict(files)
        self.gets: Counter[str] = Counter()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                data = server.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                server.gets[self.path] += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.server.daemon_threads = True
        self.host = host
        self.port = int(self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, name="file-server", daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> FileServer:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
