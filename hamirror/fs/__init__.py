"""fs layer (see docs/architecture.md)."""
