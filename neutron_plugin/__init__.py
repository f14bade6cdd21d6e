"""isthmus inside OpenStack: the Neutron service driver and API extension, and the openstack CLI plugin.

This package runs in neutron-server's (and the openstack CLI's) own Python environment, never in the
isthmus venv: it imports the standard library, what that environment already has (neutron, neutron_lib,
networking_l2gw, oslo, osc_lib, grpcio and protobuf of whatever release it carries) and, from isthmus,
only the contract's descriptor set (``isthmus/v1/contract.binpb``). ``client`` speaks to the coordinator.
"""
