"""The bgp driver: ``driver`` (BgpDriver, in the agent) and ``speaker``, the os-ken child process it starts.

Importing this package imports neither: the child (``python -m isthmus.drivers.bgp.speaker``)
loads only what it needs.
"""
