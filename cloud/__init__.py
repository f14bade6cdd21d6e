"""One region's OpenStack, as the agent sees it through openstacksdk.

The blocking calls of the agent's multisite sync and views (the agent runs them in threads). It imports
nothing of isthmus but the core (``isthmus.core``); drivers and the agent may import it.
"""
