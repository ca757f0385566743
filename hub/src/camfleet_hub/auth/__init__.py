"""Who may do what: users, site roles, API tokens, login sessions and limits, MQTT accounts, login and Users pages."""
