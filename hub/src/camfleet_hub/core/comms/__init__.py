"""Transports: MQTT through the contract's paho wrapper (``mqtt``)."""
