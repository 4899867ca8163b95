"""The decider: feedback and commands in, decisions out.

Reads ``sam.feedback.v1`` and ``sam.control.v1`` (and the tail of ``sam.pairs.v1`` after a restart);
writes ``sam.pairs.v1`` (PairAccepted, PairRejected, LabelledExampleAccepted, the data commands'
events, TrainingThresholdReached) and ``sam.dlq.v1``; keeps its state in a Faust table keyed by
user. Guarantees: every input leaves exactly one record (an output, a dead letter or a counted
skip); a partition's events are decided in offset order with none left out; a redelivery, a crash or
a rebalance puts no output on the wire twice within the state's horizon (``streams.state``).

* ``app``: the Faust app and its agent, watchdog and rebalance fence (the edge);
* ``batch``: ``BatchDecider``, a batch of messages through the decisions, the state and the output marks;
* ``decisions``: the pure decisions (``decide_feedback``, ``decide_command``);
* ``quality``, ``similarity``, ``tokens``: the checks, MinHash-LSH near-duplicates, token counts;
* ``state``, ``journal``: the user's state and how it is kept in the table, bounded per user;
* ``output_marks``, ``fence``, ``faust_guards``, ``stall``: what is already out, who may publish, and
  the repairs of Faust's offsets (each citing its upstream issue).
"""
