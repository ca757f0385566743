"""The fleet domain: agents and cameras at work - event history, settings, commands, rollout, metrics."""
