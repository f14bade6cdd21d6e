"""The coordinator's multisite wing: keypair, security group and image sync (``sync``), and the global views
of quotas, capacity and the address space (``views``, with the quota policy ``quota`` and the index
``addresses``)."""
