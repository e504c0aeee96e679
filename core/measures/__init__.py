"""Information measures stored with every scoring run: the catalogue of scores is core/scores.py,
the implementations are listed in registry.py."""
