"""The bgp driver: ``driver`` (BgpDriver, in the agent), ``client`` and ``protocol`` (how it reaches its speakers),
and ``speaker``, the os-ken process per local endpoint that outlives the agent.

Importing this package imports none of them: the speaker (``python -m isthmus.drivers.bgp.speaker``)
loads only what it needs.
"""
