"""The gateway's store: the engine plumbing (SQLite with a group-committing writer;
PostgreSQL comes later) under the domain stores (vault, payments).

Domain code talks to small store interfaces (for example
``gateway.vault.store.VaultStore``); only the engine modules here know SQL
connection details.
"""
