"""The web console: the seed's three tabs (preference data, training, models) and a trace view,
over a documented JSON API, served by the process that owns the projections store."""

from console.app import console_app, console_router, mount_console, store_routers
from console.auth import Authorizer, TokenAuthorizer
from console.deps import ConsoleDeps
from console.wiring import build_console, start_console_server

__all__ = [
    "Authorizer",
    "ConsoleDeps",
    "TokenAuthorizer",
    "build_console",
    "console_app",
    "console_router",
    "mount_console",
    "start_console_server",
    "store_routers",
]
