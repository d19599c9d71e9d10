"""The bank of :mod:`pgclient` on the lab's MariaDB (``modules/mariadb``, InnoDB), and its checks.

Transfers go through one persistent ``mariadb`` client session in batch mode (``--unbuffered``,
which stops at the first error) from the ``client`` host; acknowledged when COMMIT returned. The
checks, as root on the primary's socket: every acknowledged key in ``transfers``, the sum and
each balance as the transfers say, ``CHECK TABLE ... EXTENDED`` OK for both tables.
"""

from __future__ import annotations

from hamirror.lab import appclient
from hamirror.lab.naming import VIP, LabPaths
from hamirror.lab.pgclient import ACCOUNTS, INITIAL, bank_problems

MODULE = "mariadb"
DATA_DIR = "/srv/hamirror-mariadb"
SOCKET = "/run/hamirror/mariadb/mysqld.sock"
PASSWORD = "hm-chaos-password"
SERVER = ("mariadbd", "mysqld")

CLIENT = ["mariadb", "-h", VIP, "-u", "hm", f"-p{PASSWORD}", "--connect-timeout=3", "-N", "-B", "--unbuffered", "hm"]
TX = ("START TRANSACTION; UPDATE accounts SET balance = balance - {amount} WHERE id = {src}; "
      "UPDATE accounts SET balance = balance + {amount} WHERE id = {dst}; "
      "INSERT INTO transfers (k, src, dst, amount) VALUES ('{key}', {src}, {dst}, {amount}); COMMIT;")
ECHO = "SELECT 'ok {key}';"

SETUP = f"""
CREATE DATABASE hm;
CREATE USER 'hm'@'198.18.0.%' IDENTIFIED BY '{PASSWORD}';
GRANT ALL ON hm.* TO 'hm'@'198.18.0.%';
CREATE TABLE hm.accounts (id INT PRIMARY KEY, balance BIGINT NOT NULL) ENGINE=InnoDB;
USE hm;
INSERT INTO hm.accounts SELECT seq, {INITIAL} FROM seq_1_to_{ACCOUNTS};
CREATE TABLE hm.transfers (k VARCHAR(64) PRIMARY KEY, src INT NOT NULL, dst INT NOT NULL, amount INT NOT NULL,
  KEY (src)) ENGINE=InnoDB;
"""

CHECKS = f"""
SELECT 'sum', sum(balance) FROM accounts;
SELECT 'wrong_balances', count(*) FROM accounts a WHERE balance <> {INITIAL}
  + coalesce((SELECT sum(amount) FROM transfers WHERE dst = a.id), 0)
  - coalesce((SELECT sum(amount) FROM transfers WHERE src = a.id), 0);
CHECK TABLE accounts, transfers EXTENDED;
"""


def root_sql(paths: LabPaths, node: str, sql: str, timeout: float = 120.0) -> str:
    """``sql`` run by the mariadb client as root on node's socket; its output; LabError with its message."""
    return appclient.feed(paths, node, ["mariadb", f"--socket={SOCKET}", "-N", "-B", "--connect-timeout=5"], sql,
                          timeout)


def prepare(paths: LabPaths, primary: str) -> None:
    root_sql(paths, primary, SETUP)


def writer(paths: LabPaths, prefix: str, seed: int) -> appclient.SessionWriter:
    return appclient.SessionWriter(paths, prefix, CLIENT, TX, ECHO, ACCOUNTS, seed)


def check(paths: LabPaths, primary: str, keys: list[str]) -> tuple[set[str], list[str], dict]:
    """(acknowledged keys missing, problems of the invariant and CHECK TABLE, figures) read on primary."""
    present = set(root_sql(paths, primary, "SELECT k FROM hm.transfers;").split())
    rows = [line.split("\t") for line in root_sql(paths, primary, "USE hm;\n" + CHECKS).splitlines()]
    figures = {r[0]: r[1] for r in rows if len(r) == 2}
    checked = [r for r in rows if len(r) == 4]          # Table, Op, Msg_type, Msg_text
    problems = bank_problems(figures)
    bad = [r for r in checked if r[2] in ("error", "warning") or (r[2] == "status" and r[3] != "OK")]
    if len(checked) < 2 or bad:
        problems.append(f"CHECK TABLE: {bad or checked}")
    figures["transfers"] = str(len(present))
    return set(keys) - present, problems, figures


def is_server(pid: str, comm: str) -> bool:
    return comm in SERVER
