"""hamirror/fs/commits.py: the one rule for "the next write is a commit's page", per handle (sync
mode) and per inode (barrier mode), and when the fsync after it sends nothing. Pure: no FUSE, no
link; the tickets are the link client's own."""

from __future__ import annotations

from hamirror.fs.commits import FILES, MAX_WRITES, CommitPattern
from hamirror.link.client import Ticket

PATH = b"wal"


def _commit(commits: CommitPattern, key: int, datasync: int, writes: int = 1) -> list:
    """``writes`` writes, then an fsync: what each write was told."""
    told = [commits.wrote(key) for _ in range(writes)]
    commits.fsync(key, datasync)
    return told


def test_a_file_whose_last_fsync_followed_one_write_expects_a_commit_per_handle():
    commits = CommitPattern()
    assert commits.expects(3) is None and commits.wrote(3) is None   # never fsynced: nothing known
    commits.fsync(3, 1)                                   # its first fsync: what came before is unknown
    assert _commit(commits, 3, 1) == [None]               # one write, then fdatasync: the pattern
    assert commits.expects(3) == 1 and commits.expects(4) is None
    assert _commit(commits, 3, 0, writes=2) == [1, None]  # the first write only; two writes: no pattern
    assert _commit(commits, 3, 0) == [None]
    assert _commit(commits, 3, 1) == [0]                  # per handle, a full fsync's flag is kept too
    assert commits.expects(3) == 1


def test_per_inode_only_an_fdatasync_sets_the_pattern():
    commits = CommitPattern(per_inode=True)
    commits.fsync(7, 1)
    assert _commit(commits, 7, 0) == [None]
    assert commits.expects(7) is None                     # a full fsync sends the kernel's mtime anyway
    assert _commit(commits, 7, 1) == [None]
    assert commits.expects(7) == 1
    assert commits.wrote(7) == 1 and commits.expects(7) is None


def test_handles_are_dropped_at_release_inodes_are_bounded():
    per_handle = CommitPattern()
    for _ in range(2):
        _commit(per_handle, 5, 1)
    per_handle.sent(5, PATH, 1, Ticket(1, ()), 0)
    per_handle.released(5)                                # the number may name another file next
    assert per_handle.expects(5) is None and per_handle.early is None
    per_inode = CommitPattern(per_inode=True)
    for _ in range(2):
        _commit(per_inode, 5, 1)
    per_inode.released(5)                                 # a handle's number, not an inode
    assert per_inode.expects(5) == 1
    for ino in range(100, 100 + FILES - 1):
        per_inode.fsync(ino, 1)
    assert per_inode.expects(5) == 1                      # FILES inodes kept
    per_inode.fsync(100 + FILES, 1)
    assert per_inode.expects(5) is None                   # the least recently fsynced goes


def test_per_handle_the_fsync_sends_nothing_after_its_acknowledged_page_if_nothing_was_sent_since():
    commits = CommitPattern()
    page = Ticket(1, ())
    commits.sent(3, PATH, 1, page, stamp=10)
    assert commits.covering(3, PATH, 1, 10, last=page) is None   # not acknowledged yet
    page.complete()
    assert commits.covering(3, PATH, 1, 99, last=page) is page   # the stamp is barrier mode's
    assert commits.covering(3, PATH, 1, 99, last=page) is page   # kept: a second fsync is covered too
    assert commits.covering(3, PATH, 0, 99, last=page) is None   # an fdatasync's page, a full fsync
    assert commits.covering(4, PATH, 1, 99, last=page) is None   # another handle
    assert commits.covering(3, b"other", 1, 99, last=page) is None
    assert commits.covering(3, PATH, 1, 99, last=Ticket(2, ())) is None   # something sent since
    commits.sent(3, PATH, 0, page, stamp=10)
    assert commits.covering(3, PATH, 0, 99, last=page) is page   # a full fsync's page covers both
    assert commits.covering(3, PATH, 1, 99, last=page) is page
    refused = Ticket(3, ())
    refused.complete("link lost")
    commits.sent(3, PATH, 1, refused, stamp=10)
    assert commits.covering(3, PATH, 1, 10, last=refused) is None


def test_per_inode_the_fsync_follows_its_page_once_if_no_data_changed_since():
    commits = CommitPattern(per_inode=True)
    page = Ticket(1, ())
    commits.sent(7, PATH, 1, page, stamp=10)
    assert commits.covering(7, PATH, 1, 10, last=None) is page   # not acknowledged yet: followed
    assert commits.covering(7, PATH, 1, 10, last=None) is None   # used once
    for key, path, datasync, stamp in ((7, PATH, 1, 11), (7, PATH, 0, 10), (8, PATH, 1, 10), (7, b"x", 1, 10)):
        commits.sent(7, PATH, 1, page, stamp=10)
        assert commits.covering(key, path, datasync, stamp, last=page) is None
        assert commits.early is None
    refused = Ticket(2, ())
    refused.complete("link lost")
    commits.sent(7, PATH, 1, refused, stamp=10)
    assert commits.covering(7, PATH, 1, 10, last=None) is None


def test_a_commit_of_several_writes_is_expected_once_two_commits_made_as_many():
    commits = CommitPattern()
    commits.fsync(3, 1)
    assert _commit(commits, 3, 1, writes=2) == [None, None]   # one commit of two: not yet a pattern
    assert _commit(commits, 3, 1, writes=2) == [None, None]   # the second: now it is
    assert commits.expects(3) is None                         # the first write of the next is plain
    assert commits.wrote(3) is None
    assert commits.expects(3) == 1                            # its second is the commit's last
    assert commits.wrote(3) == 1
    assert commits.expects(3) is None and commits.wrote(3) is None   # a third write: the guess was wrong
    commits.fsync(3, 1)                                       # three after two: no pattern
    assert _commit(commits, 3, 1, writes=2) == [None, None]
    assert _commit(commits, 3, 1, writes=3) == [None, None, None]
    assert _commit(commits, 3, 1, writes=3) == [None, None, None]
    assert _commit(commits, 3, 0, writes=3) == [None, None, 1]
    assert commits.expects(3) is None and commits.wrote(3) is None and commits.expects(3) is None
    assert commits.wrote(3) is None and commits.expects(3) == 0   # the last fsync's flag: a full one


def test_no_pattern_above_max_writes_and_per_inode_only_fdatasyncs():
    commits = CommitPattern()
    commits.fsync(3, 1)
    for _ in range(3):
        assert _commit(commits, 3, 1, writes=MAX_WRITES + 1) == [None] * (MAX_WRITES + 1)
    assert _commit(commits, 3, 1, writes=MAX_WRITES) == [None] * MAX_WRITES
    assert _commit(commits, 3, 1, writes=MAX_WRITES) == [None] * MAX_WRITES   # two of MAX_WRITES: the pattern
    assert _commit(commits, 3, 1, writes=MAX_WRITES) == [None] * (MAX_WRITES - 1) + [1]
    per_inode = CommitPattern(per_inode=True)
    per_inode.fsync(7, 1)
    for datasync, told in ((0, [None, None]), (0, [None, None]), (1, [None, None]), (1, [None, 1]),
                           (0, [None, 1]), (1, [None, None]), (1, [None, 1])):   # a full fsync sets none
        assert _commit(per_inode, 7, datasync, writes=2) == told
