"""isthmus coordinator."""
