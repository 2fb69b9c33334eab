"""
Notificator: a Server-Sent Events notification server for groupware.

Browsers keep an C{EventSource} open on C{/sse}; back-end senders POST to
C{/webNotification}; every open stream of the addressed user receives the
event.
"""

__version__ = "0.1.0"
