"""isthmus agent."""
