"""The secondary's daemon, the receiver: layer 5 beside the mount's fs/ (see docs/architecture.md)."""
