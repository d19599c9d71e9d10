"""mirror layer: the mirror's states, replicator, journal record and status schema (see docs/architecture.md)."""
