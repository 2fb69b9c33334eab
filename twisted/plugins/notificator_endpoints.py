"""
The C{https:} strports server endpoint type (TLS with ALPN, for HTTP/2);
the code is in L{notificator.tls}.
"""

from notificator.tls import HTTPSServerParser

httpsServerParser = HTTPSServerParser()
