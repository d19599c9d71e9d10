"""resync layer (see docs/architecture.md)."""
