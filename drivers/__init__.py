"""isthmus drivers."""
