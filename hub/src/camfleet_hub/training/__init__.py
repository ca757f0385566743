"""Training jobs, the model registry, announcements to agents, reports, label errors and the Training page's data."""
