"""infoprune: measure the information each text sample carries and prune the least informative."""

__version__ = "0.1.0"
