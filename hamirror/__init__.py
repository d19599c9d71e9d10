"""hamirror: a two-node high-availability cluster manager with synchronous directory replication."""

__version__ = "0.2.0"
