"""The reconciler: resolves attempts whose outcome is unknown (reversals, late
replies) and matches the network's settlement files against our records.

Empty until the reconciler issue lands.
"""
