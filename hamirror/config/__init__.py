"""Configuration: the cluster file and the module folders, parsed into frozen dataclasses.

See docs/configuration.md for the schema. Callers use :mod:`hamirror.config.loader`.
"""

from hamirror.config.cluster import ClusterConfig, HeartbeatConfig, HttpConfig, NodeConfig, QuorumConfig
from hamirror.config.errors import ConfigError
from hamirror.config.loader import check, config_path, load_cluster, load_modules
from hamirror.config.module import (CheckerConfig, DirectoryConfig, ModuleConfig, RestartConfig, ScriptsConfig,
                                    VipConfig)
from hamirror.config.templates import render_script, render_text, template_vars

__all__ = [
    "CheckerConfig", "ClusterConfig", "ConfigError", "DirectoryConfig", "HeartbeatConfig", "HttpConfig",
    "ModuleConfig", "NodeConfig", "QuorumConfig", "RestartConfig", "ScriptsConfig", "VipConfig", "check",
    "config_path", "load_cluster", "load_modules", "render_script", "render_text", "template_vars",
]
