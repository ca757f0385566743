"""The camfleet contract: everything the hub, the edge agent and the trainer must agree on."""

PROTOCOL_VERSION = "v1"
__version__ = "0.1.0"
