"""Plumbing shared by several stores, below every domain folder.

- ``redis_conn``: a Redis client (standalone or Cluster), scripts, the key
  scheme, outages as ``Unavailable``;
- ``sqlite_thread``: a SQLite file owned by one worker thread (the embedded
  peer inbox, the characters' interactions);
- ``postgres``: the asyncpg pool every PostgreSQL store shares, and
  ``PoolAdapter``, what each of those stores has in common;
- ``migrations``: the one schema migration set of that database
  (``migrations/NNNN_name.sql``) and its runner.

It stands on ``wire`` (for ``Unavailable``) and on nothing else of ours.
"""
