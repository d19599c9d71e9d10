"""A mount's mirror states.

A leaf module, as ``hamirror/cluster/states.py`` is for node states: it imports nothing of the
package, so the agent, status and CLI can name a mount's state without the data path.
"""

from __future__ import annotations

import enum


class MirrorState(str, enum.Enum):
    """What a mount does with its peer; the value is what ``status.json`` and the journal hold."""

    PRIM = "PRIM"              # replicating to a live peer
    SYNCING = "SYNCING"        # online resync to a returning peer, live operations streamed too
    ALONE = "ALONE"            # peer gone: serving locally and recording changes
    FENCED = "FENCED"          # peer stopped acknowledging: mutating calls wait for the agent's verdict
    REFUSED = "REFUSED"        # the agent (or the fence timeout) refused ALONE: mutating calls fail (EIO)
    STANDALONE = "STANDALONE"  # replication off (benchmarks, a module without a peer), or not decided yet


# What the agent persists for a copy that follows its peer (agent/journal_info.py): not a state a
# mount runs in; a mount started over it streams (nothing says its peer missed anything).
REPLICA = "SECOND"

STREAMING = (MirrorState.PRIM, MirrorState.SYNCING)
BLOCKED = (MirrorState.FENCED, MirrorState.REFUSED)
# States in which data writes share the ordering lock (SYNCING changes the pending set per write).
SHARING = (MirrorState.PRIM, MirrorState.ALONE, MirrorState.STANDALONE)
