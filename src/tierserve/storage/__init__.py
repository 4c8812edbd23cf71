"""Where state is kept, for every store (jobs, keys and audit, budget usage, rollouts, collections):

- ``database``: the one parser of ``--database`` (SQLite files in the state directory, or one
  PostgreSQL database);
- ``sqlite``: the one SQLite connection set-up (WAL, ``synchronous=NORMAL``, busy timeout), the
  fail-closed store identity, a connection on a thread of its own, transactions;
- ``postgres``: the one PostgreSQL pool factory, one pool per database shared by a server's stores;
- ``group_commit``: requests that arrive while a write is in flight share the next one.
"""
