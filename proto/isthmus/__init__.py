"""isthmus: the infrastructure network between OpenStack regions, cells and instances.

This package root holds the contract (``isthmus.v1``: .proto files and generated
stubs), the domain model shared by coordinator, agent and drivers, the error
tree, and ``isthmusctl``.
"""

__version__ = "0.1.0"
