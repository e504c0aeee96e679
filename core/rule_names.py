"""The pruning rules by name (their semantics: core/prune.py), light enough for the CLI's parser."""

RULES = ("prune-low", "prune-high", "keep-middle")
