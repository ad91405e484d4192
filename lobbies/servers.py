"""Starting the relay under an ASGI server: uvicorn (default) or daphne.

uvicorn runs with its sans-I/O ``websockets`` protocol, uvloop and httptools: the fastest
combination measured here (shared/PITFALLS.md, and the README's benchmark). Its WebSocket
``send`` waits for the socket's write buffer to drain and it stops reading a socket until the
application has taken the previous frame, so a slow reader slows its sender instead of growing
memory.
"""

from __future__ import annotations

import uvicorn

APPLICATION = "relayproject.asgi:application"


def run_uvicorn(host: str, port: int, *, max_message_bytes: int) -> None:
    """Serve the relay with uvicorn until interrupted."""
    uvicorn.run(
        APPLICATION,
        host=host,
        port=port,
        ws="websockets-sansio",
        loop="uvloop",
        http="httptools",
        ws_max_size=max_message_bytes,
        # The LF server (Node's ws) does not compress either; deflate costs CPU per frame.
        ws_per_message_deflate=False,
        lifespan="off",
        log_level="warning",
        access_log=False,
    )


def run_daphne(host: str, port: int, *, max_message_bytes: int) -> None:
    """Serve the relay with daphne until interrupted."""
    from daphne.endpoints import build_endpoint_description_strings
    from daphne.server import Server
    from django.utils.module_loading import import_string

    Server(
        application=import_string(APPLICATION.replace(":", ".")),
        endpoints=build_endpoint_description_strings(host=host, port=port),
        websocket_max_message_size=max_message_bytes,
        websocket_max_frame_size=max_message_bytes,
        verbosity=0,
    ).run()
