"""The resident's page: who came, who may come in, the devices, the log (read only).

``[web] enabled = true`` starts it inside the daemon (:class:`WebServer`);
``lockgw resident-link`` lets a browser in (:class:`ResidentAccess`). See ``_server``.
"""

from gateway.web._server import LoginLimiter, WebServer
from gateway.web.sessions import ResidentAccess, Session

__all__ = ["LoginLimiter", "ResidentAccess", "Session", "WebServer"]
