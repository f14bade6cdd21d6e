"""The agent's multisite part: its OpenStack region's side of the sync and of the global views.

``sync`` does the coordinator's sync tasks (keypairs, security groups, images) against the region and
reports their statuses and the region's image inventory; ``views`` reads and reports the region's quota
usage, capacity and addresses and applies the quota limits the coordinator assigns. Both talk to OpenStack
through ``isthmus.cloud`` and to the coordinator over the one RegionAgentService stream ``sync`` holds.
"""
