"""A bank on the lab's PostgreSQL (``modules/postgresql``): transfers through the VIP, and the checks.

Table ``accounts`` holds ACCOUNTS accounts of INITIAL each; every transaction moves an amount from
one account to another and inserts its unique key into ``transfers`` (src, dst, amount), in one
transaction, through one persistent ``psql`` session from the ``client`` host
(:class:`appclient.SessionWriter`; psycopg is not a dependency, and one psql per commit would cost
a process and a connection per transaction). A transfer is acknowledged when COMMIT returned.

The checks, as the superuser on the primary (Unix socket): every acknowledged key is in
``transfers``; the sum of the balances is ACCOUNTS x INITIAL and each balance equals INITIAL plus
what ``transfers`` says came in minus what went out; ``amcheck``'s ``bt_index_check`` (with the
heap-all-indexed check) on every B-tree index, catalogs included, and ``verify_heapam`` on both
tables find nothing.
"""

from __future__ import annotations

from hamirror.lab import appclient
from hamirror.lab.naming import VIP, LabPaths
from hamirror.lab.shell import LabError

MODULE = "postgresql"
DATA_DIR = "/srv/hamirror-postgresql"
PG_BIN = "/usr/lib/postgresql/15/bin"
SOCKET_DIR = "/run/hamirror/postgresql"
PASSWORD = "hm-chaos-password"
ACCOUNTS = 50
INITIAL = 1000
SERVER = ("postgres",)   # the postmaster's and its children's comm; the postmaster's parent is not one

CLIENT = ["env", f"PGPASSWORD={PASSWORD}", "PGCONNECT_TIMEOUT=3", f"PGHOST={VIP}", "PGUSER=hm", "PGDATABASE=hm",
          f"{PG_BIN}/psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1"]
TX = ("BEGIN; UPDATE accounts SET balance = balance - {amount} WHERE id = {src}; "
      "UPDATE accounts SET balance = balance + {amount} WHERE id = {dst}; "
      "INSERT INTO transfers (k, src, dst, amount) VALUES ('{key}', {src}, {dst}, {amount}); COMMIT;")
ECHO = "\\echo ok {key}"

SETUP = f"""
CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL);
INSERT INTO accounts SELECT g, {INITIAL} FROM generate_series(1, {ACCOUNTS}) g;
CREATE TABLE transfers (k text PRIMARY KEY, src int NOT NULL, dst int NOT NULL, amount int NOT NULL);
CREATE INDEX transfers_src ON transfers (src);
"""

CHECKS = f"""
SELECT 'sum ' || sum(balance) FROM accounts;
SELECT 'wrong_balances ' || count(*) FROM accounts a WHERE balance <> {INITIAL}
  + coalesce((SELECT sum(amount) FROM transfers WHERE dst = a.id), 0)
  - coalesce((SELECT sum(amount) FROM transfers WHERE src = a.id), 0);
SELECT 'btree_checked ' || count(bt_index_check(c.oid, true)) FROM pg_index i
  JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am a ON a.oid = c.relam
  WHERE a.amname = 'btree' AND c.relpersistence <> 't' AND i.indisready AND i.indisvalid;
SELECT 'heap_corrupt ' || (SELECT count(*) FROM verify_heapam('accounts'))
  + (SELECT count(*) FROM verify_heapam('transfers'));
"""


def superuser(paths: LabPaths, node: str, sql: str, database: str = "hm", timeout: float = 120.0) -> str:
    """``sql`` run by psql as postgres on node's socket; its output; LabError with psql's message."""
    return appclient.feed(paths, node, ["runuser", "-u", "postgres", "--", f"{PG_BIN}/psql", "-X", "-qAt", "-v",
                                        "ON_ERROR_STOP=1", "-h", SOCKET_DIR, "-d", database], sql, timeout)


def bank_problems(figures: dict) -> list[str]:
    """What the sum and the per-account balances say (both banks' checks report them alike)."""
    problems = []
    if figures.get("sum") != str(ACCOUNTS * INITIAL):
        problems.append(f"sum of balances {figures.get('sum')} != {ACCOUNTS * INITIAL}")
    if figures.get("wrong_balances") != "0":
        problems.append(f"{figures.get('wrong_balances')} balances disagree with the transfers table")
    return problems


def prepare(paths: LabPaths, primary: str) -> None:
    """The role, the database, amcheck and the bank (idempotent only on a fresh lab)."""
    superuser(paths, primary, f"CREATE ROLE hm LOGIN PASSWORD '{PASSWORD}';\nCREATE DATABASE hm OWNER hm;\n",
              database="postgres")
    superuser(paths, primary, "CREATE EXTENSION amcheck;\nSET ROLE hm;\n" + SETUP)


def writer(paths: LabPaths, prefix: str, seed: int) -> appclient.SessionWriter:
    return appclient.SessionWriter(paths, prefix, CLIENT, TX, ECHO, ACCOUNTS, seed)


def check(paths: LabPaths, primary: str, keys: list[str]) -> tuple[set[str], list[str], dict]:
    """(acknowledged keys missing, problems of the invariant and amcheck, figures) read on primary."""
    present = set(superuser(paths, primary, "SELECT k FROM transfers;").split())
    try:
        figures = dict(line.split(" ", 1) for line in superuser(paths, primary, CHECKS).splitlines() if " " in line)
    except LabError as exc:          # bt_index_check raises at the first corrupt index
        return set(keys) - present, [f"amcheck / invariant query failed: {exc}"], {"transfers": str(len(present))}
    problems = bank_problems(figures)
    if figures.get("heap_corrupt") != "0":
        problems.append(f"verify_heapam: {figures.get('heap_corrupt')} corrupt tuples")
    figures["transfers"] = str(len(present))
    return set(keys) - present, problems, figures


def is_server(pid: str, comm: str) -> bool:
    """The postmaster: a ``postgres`` whose parent is not one (backends' comm is ``postgres`` too)."""
    if comm not in SERVER:
        return False
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            ppid = f.read().rsplit(")", 1)[1].split()[1]
        with open(f"/proc/{ppid}/comm", encoding="ascii", errors="replace") as f:
            return f.read().strip() not in SERVER
    except (OSError, IndexError):
        return False
