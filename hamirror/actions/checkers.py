"""Checkers: is the application healthy? One small class per kind behind :class:`Checker`.

A check is a blocking call bounded by its timeout; the agent runs it off its loop (a thread) every
``interval`` and counts failures against the module's restart policy. Checkers say nothing about
what to do: that is the state machine's job (restart in place, then hand over).
"""

from __future__ import annotations

import abc
import os
import socket
import subprocess

import psutil

from hamirror.config.cluster import ClusterConfig
from hamirror.config.module import CheckerConfig, ModuleConfig
from hamirror.config.templates import render_text


class Checker(abc.ABC):
    """One health check. ``check()`` returns None when healthy, else why not (for the log)."""

    def __init__(self, name: str, interval: float = 2.0, timeout: float = 1.0) -> None:
        self.name, self.interval, self.timeout = name, interval, timeout

    @abc.abstractmethod
    def check(self) -> str | None:
        """Run one check (blocking, at most about ``timeout`` seconds)."""


class ProcessChecker(Checker):
    """Healthy while a process matches the name and/or has the substring in its command line."""

    def __init__(self, name: str, process: str | None = None, cmdline_contains: str | None = None,
                 **kw: float) -> None:
        super().__init__(name, **kw)
        if process is None and cmdline_contains is None:
            raise ValueError("a process checker needs process or cmdline_contains")
        self.process, self.cmdline_contains = process, cmdline_contains

    def _matches(self, proc: psutil.Process) -> bool:
        if self.process is not None and proc.info["name"] != self.process:
            return False
        if self.cmdline_contains is not None:
            return self.cmdline_contains in " ".join(proc.info["cmdline"] or ())
        return True

    def check(self) -> str | None:
        own = os.getpid()
        for proc in psutil.process_iter(["name", "cmdline", "status"]):
            if proc.pid != own and proc.info["status"] != psutil.STATUS_ZOMBIE and self._matches(proc):
                return None
        wanted = " and ".join(filter(None, (self.process and f"name {self.process!r}",
                                            self.cmdline_contains and f"command line with {self.cmdline_contains!r}")))
        return f"no process with {wanted}"


class TcpChecker(Checker):
    """Healthy while a TCP connection to host:port is accepted within the timeout."""

    def __init__(self, name: str, host: str, port: int, **kw: float) -> None:
        super().__init__(name, **kw)
        self.host, self.port = host, port

    def check(self) -> str | None:
        try:
            with socket.create_connection((self.host, self.port), timeout=self.timeout):
                return None
        except OSError as exc:
            return f"cannot connect to {self.host}:{self.port}: {exc.strerror or exc}"


class InterfaceChecker(Checker):
    """Healthy while the network interface exists and is up (carrier included)."""

    def __init__(self, name: str, interface: str, **kw: float) -> None:
        super().__init__(name, **kw)
        self.interface = interface

    def check(self) -> str | None:
        stats = psutil.net_if_stats().get(self.interface)
        if stats is None:
            return f"interface {self.interface} does not exist"
        return None if stats.isup else f"interface {self.interface} is down"


class ScriptChecker(Checker):
    """Healthy while the script exits 0 within the timeout (its process group is killed after)."""

    def __init__(self, name: str, path: str, **kw: float) -> None:
        super().__init__(name, **kw)
        self.path = path

    def check(self) -> str | None:
        proc = subprocess.Popen([self.path], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True)
        try:
            code = proc.wait(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, 9)
            except ProcessLookupError:
                pass
            proc.wait()
            return f"{self.path} did not answer within {self.timeout:g} s"
        return None if code == 0 else f"{self.path} exited {code}"


def build(config: CheckerConfig, module: ModuleConfig, cluster: ClusterConfig) -> Checker:
    """A checker from its configuration, its template values rendered for this node."""
    def text(key: str) -> str | None:
        value = getattr(config, key)
        return None if value is None else render_text(module, cluster, f"checkers.{config.name}.{key}", value)

    timing = {"interval": config.interval, "timeout": config.timeout}
    if config.type == "process":
        return ProcessChecker(config.name, text("process"), text("cmdline_contains"), **timing)
    if config.type == "tcp":
        return TcpChecker(config.name, text("host") or "", int(config.port or 0), **timing)
    if config.type == "interface":
        return InterfaceChecker(config.name, text("interface") or "", **timing)
    if config.type == "script":
        return ScriptChecker(config.name, config.path or "", **timing)
    raise ValueError(f"unknown checker type {config.type!r}")
