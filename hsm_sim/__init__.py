"""The HSM key interface (a ``Protocol``), a software HSM and a PKCS#11 backend.

Empty until the HSM/vault issue lands.
"""
