"""
The HTTP layer: twisted.web's site, request and channel as the server uses
them, and the resources of its paths.  It knows HTTP, not who is connected
(the L{notificator.hub.Hub}'s) nor how many nodes there are (the
L{notificator.broker.Broker}'s).
"""
