"""The layers a step is composed of, each present only when the step needs it.

Running one node ("a step") is these layers, outermost first::

    cache -> events -> retry -> limit -> timeout -> placement

- ``cache`` (``cache.py``): a hit stores the value and skips the rest; a miss saves the
  result after it.
- ``events`` (``events.py``): ``on_node_start`` / ``on_node_end`` / ``on_node_error``.
- ``retry`` (``retry.py``): ``Retry``: attempts again after a failure that matches, after
  a backoff that waits on the loop (holding no worker and no slot).
- ``limit`` (``limit.py``): ``Limit``: the node's process-wide concurrency and rate bounds,
  then the level's ``max_concurrent`` slot; held only while an attempt runs.
- ``timeout`` (``timeout.py``): seconds per attempt; an async body is cancelled, a sync body
  in a worker is abandoned.
- ``placement`` (``place.py``): where the body runs: awaited on the loop (async), inline on
  a loop HyperNodes owns, in a worker thread, or shipped to a process or cluster. A
  streaming node (a generator) has ``stream.py`` instead (with its own timeout): its chunks
  are emitted as they are yielded (``on_node_chunk``), its value is their list.

``cache`` and ``events`` depend on the level (whether it has a cache and callbacks) and are
applied by the drivers; the per-attempt layers depend only on the node and are composed
once, when a plan is compiled (``chain.compose``). A plain step has no per-attempt layer:
it compiles to its placement, a bare call. The two drivers walk a plan with these layers:
``scheduler.run_step`` (async: every step) and ``inline.run_sync_steps`` with
``inline.run_sync_steps_observed`` (the loop-free path: plain sync steps only).

Adding a per-step policy is one module here plus its option on ``@node`` and its line in
``chain.compose``.
"""

__all__: list[str] = []
