"""Rendering of module scripts and checker values with jinja2 (StrictUndefined: a typo is an error)."""

from __future__ import annotations

import os
import shlex
import sys
import traceback
from typing import Any

import jinja2

from hamirror.config.cluster import ClusterConfig, NodeConfig
from hamirror.config.errors import ConfigError
from hamirror.config.module import ModuleConfig


def template_vars(module: ModuleConfig, cluster: ClusterConfig, state: str | None,
                  node: NodeConfig | None = None) -> dict[str, Any]:
    """The variables every template of ``module`` sees, as seen from ``node`` (default: this node).

    Without a VIP, ``vip``, ``vip_ip`` and ``interface`` are empty strings so that templates can
    test ``{% if vip %}``.
    """
    node = node or cluster.local_node
    peer = next(other for other in cluster.nodes if other is not node)
    values: dict[str, Any] = dict(module.vars)
    values.update(
        module=module.name, node=node.name, peer=peer.name,
        node_address=node.replication_address, peer_address=peer.replication_address,
        dirs=[directory.path for directory in module.directories],
        vip=module.vip.address if module.vip else "", vip_ip=module.vip.ip if module.vip else "",
        interface=module.vip.interface if module.vip else "",
        module_dir=module.folder, run_dir=cluster.module_run_dir(module.name),
        state_dir=cluster.module_state_dir(module.name), python=sys.executable, state=state or "",
    )
    return values


def _environment(folder: str) -> jinja2.Environment:
    """StrictUndefined, plus a ``quote`` filter (shlex.quote) so values are safe in shell scripts."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(folder), undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True, autoescape=False)
    env.filters["quote"] = lambda value: shlex.quote(str(value))
    return env


def _template_line(exc: BaseException, filename: str) -> int | None:
    """The template line where rendering failed, from jinja2's rewritten traceback."""
    line = getattr(exc, "lineno", None)
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename == filename:
            line = frame.lineno
    return line


def render_script(module: ModuleConfig, cluster: ClusterConfig, script_name: str, state: str | None,
                  node: NodeConfig | None = None) -> str:
    """The text of one of the module's scripts, rendered; ConfigError names the script and line."""
    path = module.script_path(script_name)
    try:
        template = _environment(module.folder).get_template(script_name)
        return template.render(template_vars(module, cluster, state, node))
    except ConfigError:
        raise
    except jinja2.TemplateNotFound:
        raise ConfigError(path, None, "script is missing") from None
    except (jinja2.TemplateError, OSError, UnicodeDecodeError, TypeError, ValueError) as exc:
        line = _template_line(exc, os.path.abspath(path))
        raise ConfigError(path, f"line {line}" if line else "template", f"cannot render: {exc}") from None


def render_text(module: ModuleConfig, cluster: ClusterConfig, key: str, text: str,
                node: NodeConfig | None = None) -> str:
    """A template string from ``module.toml`` (e.g. a checker's host); ``key`` names it in errors."""
    try:
        return _environment(module.folder).from_string(text).render(template_vars(module, cluster, None, node))
    except ConfigError:
        raise
    except (jinja2.TemplateError, TypeError, ValueError) as exc:
        raise ConfigError(module.file, key, f"cannot render: {exc}") from None
