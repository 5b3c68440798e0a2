"""The yardstick of ``server_bench.py``: a bare Starlette JSON endpoint on one uvicorn worker.

Started exactly the way ``interapp serve`` starts its app (a socket bound first on 127.0.0.1,
then ``uvicorn.Config`` with the same settings and ``Server.run(sockets=[…])``), so that the only
difference between the yardstick and the application server is the application itself.

    python bench/bare_server.py [--port 0]

Prints ``bare: serving on http://127.0.0.1:PORT`` once it is listening.
"""

from __future__ import annotations

import argparse
import socket
import sys

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


async def hello(_: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


app = Starlette(routes=[Route("/json", hello)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    # The same socket set-up as interapp.cli.server_cmds.bind_socket.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.listen(2048)
    sock.set_inheritable(True)
    port = sock.getsockname()[1]
    # The same uvicorn settings as `interapp serve`.
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                            ws_max_size=64 * 1024, proxy_headers=False)
    server = uvicorn.Server(config)
    sys.stdout.write(f"bare: serving on http://{args.host}:{port}\n")
    sys.stdout.flush()
    server.run(sockets=[sock])


if __name__ == "__main__":
    main()
