"""replica layer (see docs/architecture.md): the secondary's daemon, peer of the mount in fs/."""
