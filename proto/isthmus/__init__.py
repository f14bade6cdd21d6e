"""isthmus: the infrastructure network between OpenStack regions, cells and instances.

This folder holds the package root and the contract (``isthmus.v1``: the .proto files and their generated
stubs). Every other part is a top-level folder of the repository with the same name as its import path:
``isthmus.core`` is ``core/``, ``isthmus.ctl`` is ``ctl/``, ``isthmus.agent`` is ``agent/``, and so on.
"""

__version__ = "0.1.0"
