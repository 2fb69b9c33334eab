"""
twistd plugin drop-in: ``twistd notificator`` builds the service in
L{notificator.tap}.  Kept to a few lines because every ``twistd --help``
imports it.
"""

from twisted.application.service import ServiceMaker

Notificator = ServiceMaker(
    "Notificator",
    "notificator.tap",
    "Server-Sent Events notification server.",
    "notificator",
)
