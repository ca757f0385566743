"""Serving: predictions over REST (analysis, batched classify) and the log of every prediction made."""
