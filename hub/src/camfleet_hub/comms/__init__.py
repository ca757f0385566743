"""Transports: the one module that knows paho (``mqtt``)."""
