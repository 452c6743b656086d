"""`python -m modelfleet.runtime.serve start FOLDER`: `mlserver start FOLDER`, with the OIP binary data
extension in front of MLServer's REST app (`modelfleet.runtime.binary`).

MLServer 1.7 builds its FastAPI app in `mlserver.rest.server.create_app`; the middleware is added to
that app before the server starts. Only the runtime image imports this module (MLServer is not a
dependency of the operator).
"""

from __future__ import annotations

import sys
from typing import Any

from modelfleet.runtime.binary import BinaryDataMiddleware


def install() -> None:
    """Make every REST app MLServer creates from now on answer the binary data extension."""
    import mlserver.rest.server as rest_server

    create_app = rest_server.create_app

    def create_app_with_binary_data(*args: Any, **kwargs: Any) -> Any:
        app = create_app(*args, **kwargs)
        app.add_middleware(BinaryDataMiddleware)
        return app

    rest_server.create_app = create_app_with_binary_data


def main() -> None:
    install()
    from mlserver.cli.main import main as mlserver_main

    sys.argv[0] = "mlserver"
    mlserver_main()


if __name__ == "__main__":
    main()
