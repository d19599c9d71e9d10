"""The order of a command on both nodes (``hamirror stop|start|restart MODULE --all``, agent/both.py)."""

from hamirror.agent import both
from hamirror.cluster.view import Command


def test_a_stop_typed_on_the_primary_begins_with_the_secondary():
    assert both.order(Command.STOP, primary_here=True) == (both.PEER, both.LOCAL)
    assert both.order(Command.STOP, primary_here=False) == (both.LOCAL, both.PEER)


def test_a_start_or_restart_begins_here():
    for command in (Command.START, Command.RESTART):
        assert both.order(command, primary_here=True) == (both.LOCAL, both.PEER)
        assert both.order(command, primary_here=False) == (both.LOCAL, both.PEER)
