"""isthmusctl: the command-line client of the coordinator's API and of an agent's admin socket.

A client like any other: it imports the contract (``isthmus.v1``) and the core (``isthmus.core``), never a
server's code. ``main`` holds the parser and the network, border and local commands; ``sync``, ``views``
and ``events`` one command group each.
"""
