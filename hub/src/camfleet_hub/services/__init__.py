"""Hub logic the REST routes call: plain functions over a session and the shared services, no HTTP."""
