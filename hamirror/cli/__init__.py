"""Command-line surface: one module per command group, each exposing ``register(subparsers)``."""
