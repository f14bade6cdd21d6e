"""isthmusctl: the command-line client of the coordinator's API and of an agent's admin socket.

A client like any other: it imports the contract (``isthmus.v1``) and the core (``isthmus.core``), never a
server's code. One module per command group (``network``, ``border``, ``status``, ``watch``, ``local``,
``sync``, ``events``, ``views``), each with ``add_parsers(groups, top)`` and ``COMMANDS``, which ``main``
composes into the parser and the dispatch; ``pki`` is the command line of its own that ``main`` hands
``isthmusctl pki ...``. What they share, and which imports none of them: ``flags`` (flag types and parser
helpers), ``render`` (text output) and ``client`` (the session of one command).
"""
