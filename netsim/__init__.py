"""netsim: a card-network (issuer host) simulator over mutual TLS, with rules,
faults, its own ledger (the truth), settlement files and replay mode.

Empty until the network issue lands.
"""
