"""The datasets domain's REST routers, one module per resource."""
