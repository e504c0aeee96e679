"""Information measures stored with every scoring run; see registry.py for the list."""
