"""
Brokers (see L{notificator.broker.local}).
"""
