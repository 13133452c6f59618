"""Which rung serves a request and when: the cost model and the decision (``policy``), the ladder of rungs
``auto`` serves (``ladder``), the queue in front of the workers and the lane (``scheduler``). No I/O, no HTTP."""
