"""The web app every page shares: the Jinja2 environment, base template, static files, overview and Training."""
