"""actions layer (see docs/architecture.md)."""
