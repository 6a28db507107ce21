"""Time arithmetic and estimation. Pure: every timestamp is passed in.

- ``sample``: the four-timestamp exchange and its offset and delay.
- ``estimator``: a device's offset with an error bound, from its samples.
- ``session``: one device's sync session: when to ping, what to do with a pong.
- ``reference``: the server's reference clock, monotonic and anchored to wall time.

Units: integer nanoseconds inside this package (``*_ns``); the wire uses
microseconds and converts at the edge. Sign: ``offset = server - device``.
"""
