"""The shared core of isthmus: what the coordinator, the agent, the drivers and isthmusctl all use.

The domain model and its validation (``model``, ``border``, ``sync``, ``views``), the error tree (``errors``), the
conversions between the model and the protobuf contract (``wire``) and the gRPC edge that turns errors
into statuses (``edge``), atomic files (``files``), the PKI (``pki``), metrics (``metrics``) and the
command-line value types shared by every program (``flags``). It imports nothing of isthmus but the
contract (``isthmus.v1``).
"""
