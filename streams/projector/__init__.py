"""The projector: the topics into ClickHouse, and training requests at thresholds.

Reads ``sam.feedback.v1``, ``sam.pairs.v1``, ``sam.training.v1``, ``sam.adapters.v1``,
``sam.inference.v1`` and ``sam.dlq.v1``; writes ClickHouse (the only writer), dataset snapshots to
the artifact store, and ``sam.training.v1`` (TrainingRequested), ``sam.pairs.v1`` (UserErased),
``sam.adapters.v1`` (AdapterRevoked) and ``sam.dlq.v1``. Guarantees: a batch is written with insert
dedup tokens derived from its source offsets and committed after, so a redelivered batch changes no
row; every table can be rebuilt from the topics alone and equals the live one.

* ``consumer``: the confluent-kafka loop (the edge);
* ``projection``: ``Projector``, events to rows, snapshots and requests;
* ``rows``: one function per table row;
* ``export``: the active pairs folded from the log (``samtuner pairs export``);
* ``rebuild``: ``samtuner projections rebuild``, the tables from the topics into shadow tables, swapped in.
"""
