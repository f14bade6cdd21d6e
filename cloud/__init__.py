"""One region's OpenStack, as the agent sees it through openstacksdk.

The blocking calls of the agent's multisite sync and views (the agent runs them in threads): keypairs,
security groups and images made to exist in one region, from a spec or from another region (``keypairs``,
``security_groups``, ``images``, each returning an ``outcome``); the region's project quotas, capacity and
addresses as isthmus's views and global quotas see them (``usage``, ``addresses``, over ``neutron``'s paged
listing). ``session`` opens the connection and holds the errors every failure leaves the package as.

What isthmus owns, and the only things it updates or deletes:
  keypair         the caller says so (``owned``); a keypair is removed only while it still has the key isthmus gave it
  security group  tagged ``isthmus-sync:<intent>``; one adopted with ``replace`` also carries
                  ``isthmus-adopted:<intent>`` and is never deleted (only untagged)
  image           property ``isthmus_sync=<intent>`` (plus ``isthmus_source``, ``isthmus_rollout``), set in the
                  create itself, so even a copy cut short is recognised and cleaned up by the next copy

It imports nothing of isthmus but the core (``isthmus.core``); the agent and drivers may import it.
"""
