"""The reconciler: resolves attempts whose outcome is unknown (reversals, late
replies) and matches the network's settlement files against our records.

Modules, one job each:

* :mod:`reconciler.rules`: what an unknown attempt becomes (pure);
* :mod:`reconciler.queue`: the durable store-and-forward queue and outbox checkpoint;
* :mod:`reconciler.worker`: the worker that sends reversals and repeats;
* :mod:`reconciler.support`: the worker's backoff, counters and late-reply relay;
* :mod:`reconciler.run_cli`: ``paygate reconcile run [--once]``;
* :mod:`reconciler.settlement_file`: streaming reader of netsim's settlement file
  (every check of :func:`netsim.parse_settlement`, fast enough for a million lines);
* :mod:`reconciler.settlement`: settlement matching (pure): classes ``matched``,
  ``missing_ours``, ``missing_network``, ``amount_mismatch``, ``duplicate``, the
  ``reverse`` actions and the alerts;
* :mod:`reconciler.report`: the settlement report (JSON and a table);
* :mod:`reconciler.cli`: the ``paygate reconcile`` command group (``run``, the
  default, and ``settlement``), and the ``settlement_actions`` table.
"""
