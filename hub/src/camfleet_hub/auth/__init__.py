"""Accounts and who may do what: users and site roles (``users``), API tokens (``tokens``), log in and login
sessions (``logins``), the caller behind a request (``callers``, ``deps``), and the brokers' MQTT accounts.

Rules (the REST API and the web UI enforce the same ones):
- A hub admin (``users.is_admin``) may do everything. Otherwise a user holds one role per site:
  admin (everything in that site, grants roles there), labeller (curate), viewer (read).
- An API token carries a role and a site (NULL = every site; only hub admins create those). Its power is
  capped by its owner's current rights: a token never does more than the user who made it could do now.
  An every-site admin token acts as a hub admin (what trainers use).
- Secrets (token and session cookie) are shown once; the database keeps their sha256.
- Accounts (users, roles, passwords, tokens) are managed from a logged-in session only, never with a token
  (``auth.deps.SessionUserDep``; ``create_token`` refuses a token caller too). A password change or a user's
  removal revokes that user's sessions and tokens.
- Failed logins are rows in SQL (every hub process sees them), limited per username, per address and per pair.
"""
