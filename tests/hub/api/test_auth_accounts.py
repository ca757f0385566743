"""Issue 10 hole 1 and the low items: account operations only from a session, the current password for a
self-change, revocation of sessions and tokens, site admins' view of users, no password in a 422."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from test_auth import API, PASSWORD, admin_session, anonymous, bearer, logged_in, make_user, setup_sites  # noqa: E402

from camfleet_hub.auth import callers, tokens, users
from camfleet_hub.auth.models import Role
from camfleet_hub.core.errors import ForbiddenError

ADMIN_PASSWORD = "admin-password-1"


def _admin_id(api: Any) -> int:
    return next(u["id"] for u in admin_session(api).get(f"{API}/users").json() if u["username"] == "admin")


def test_a_viewer_token_cannot_take_over_its_owner(sqlite_api) -> None:
    """The reviewed attack: the admin's site-viewer token (an agent's) reset the admin's password, listed,
    revoked and minted tokens. Every account route now answers 403 to any token."""
    api = sqlite_api
    setup_sites(api, "alpha")
    hub_admin = admin_session(api)
    agent = hub_admin.post(f"{API}/tokens", json={"name": "agent", "site": "alpha", "role": "viewer"}).json()
    other = hub_admin.post(f"{API}/tokens", json={"name": "other", "site": "alpha", "role": "viewer"}).json()
    admin_id = _admin_id(api)
    for token in (agent["token"], api.admin_token):  # a site viewer token and an every-site admin token alike
        client = bearer(api, token)
        attempts = [
            client.patch(f"{API}/users/{admin_id}", json={"password": "taken over 1"}),
            client.get(f"{API}/tokens"),
            client.delete(f"{API}/tokens/{other['id']}"),
            client.post(f"{API}/tokens", json={"name": "child", "site": "alpha", "role": "viewer"}),
            client.get(f"{API}/users"),
            client.post(f"{API}/users", json={"username": "mallory", "password": PASSWORD}),
            client.put(f"{API}/users/{admin_id}/roles/alpha", json={"role": "admin"}),
            client.delete(f"{API}/users/{admin_id}"),
            client.get("/ui/users"),
            client.post(f"/ui/users/{admin_id}", data={"action": "password", "password": "taken over 1"}),
            client.post("/ui/tokens", data={"name": "child", "site": "alpha", "role": "viewer"}),
        ]
        for r in attempts:
            assert r.status_code == 403, (r.request.method, r.request.url, r.status_code)
        assert "logged-in session" in attempts[0].json()["detail"]
    # nothing changed: the admin still logs in with the old password, the other token still works
    logged_in(api, "admin", ADMIN_PASSWORD)
    assert bearer(api, other["token"]).get(f"{API}/sites/alpha/classifiers").status_code == 200
    assert [t["name"] for t in hub_admin.get(f"{API}/tokens").json() if t["name"] == "child"] == []


def test_a_token_caller_cannot_mint_tokens_in_the_service(sqlite_api) -> None:
    """The service refuses too, so no other path (CLI, a future route) can create a child token."""
    api = sqlite_api
    with api.services.sessions() as s:
        admin = users.get_user_by_name(s, "admin")
        caller = callers.caller_of_token(s, api.admin_token)
        assert caller is not None and caller.token_id is not None
        with pytest.raises(ForbiddenError, match="cannot create tokens"):
            tokens.create_token(s, caller, "child", None, Role.ADMIN)
        tokens.create_token(s, callers.caller_of_user(s, admin), "from a user", None, Role.VIEWER)  # a user may


def test_own_password_change_needs_the_current_one_and_revokes_everything(api) -> None:
    setup_sites(api, "alpha")
    uid = make_user(api, "pat", {"alpha": "labeller"})
    pat, elsewhere = logged_in(api, "pat"), logged_in(api, "pat")
    secret = pat.post(f"{API}/tokens", json={"name": "script", "site": "alpha", "role": "viewer"}).json()["token"]
    assert bearer(api, secret).get(f"{API}/sites/alpha/classifiers").status_code == 200

    r = pat.patch(f"{API}/users/{uid}", json={"password": "new password 2"})
    assert r.status_code == 422 and "current_password" in r.json()["detail"]
    r = pat.patch(f"{API}/users/{uid}", json={"password": "new password 2", "current_password": "wrong one 9"})
    assert r.status_code == 403 and "current_password is wrong" in r.json()["detail"]
    assert elsewhere.get(f"{API}/auth/me").status_code == 200  # refused changes revoke nothing

    r = pat.patch(f"{API}/users/{uid}", json={"password": "new password 2", "current_password": PASSWORD})
    assert r.status_code == 200
    pat.headers["X-CSRF-Token"] = r.headers["x-csrf-token"]  # this browser got a fresh session …
    assert pat.get(f"{API}/auth/me").json()["name"] == "pat"
    assert elsewhere.get(f"{API}/auth/me").status_code == 401  # … every other one ended
    revoked = bearer(api, secret).get(f"{API}/sites/alpha/classifiers")
    assert revoked.status_code == 401 and "revoked" in revoked.json()["detail"]  # and the tokens with it
    logged_in(api, "pat", "new password 2")


def test_admin_reset_and_removal_revoke_the_users_tokens(sqlite_api) -> None:
    api = sqlite_api
    setup_sites(api, "alpha")
    uid = make_user(api, "sam", {"alpha": "viewer"})
    sam = logged_in(api, "sam")
    first = sam.post(f"{API}/tokens", json={"name": "a", "site": "alpha", "role": "viewer"}).json()["token"]
    hub_admin = admin_session(api)
    assert hub_admin.patch(f"{API}/users/{uid}", json={"password": "reset by admin 3"}).status_code == 200
    assert bearer(api, first).get(f"{API}/auth/me").status_code == 401
    assert sam.get(f"{API}/auth/me").status_code == 401

    sam = logged_in(api, "sam", "reset by admin 3")
    second = sam.post(f"{API}/tokens", json={"name": "b", "site": "alpha", "role": "viewer"}).json()["token"]
    assert hub_admin.delete(f"{API}/users/{uid}").status_code == 204
    assert bearer(api, second).get(f"{API}/auth/me").status_code == 401
    assert sam.get(f"{API}/auth/me").status_code == 401


def test_the_users_page_password_form_needs_the_current_password(sqlite_api) -> None:
    api = sqlite_api
    uid = make_user(api, "una")
    una = logged_in(api, "una")
    page = una.get("/ui/users")
    assert 'name="current_password"' in page.text
    r = una.post(f"/ui/users/{uid}", data={"action": "password", "password": "una new pass 4"})
    assert r.status_code == 422 and "current_password is required" in r.text
    done = una.post(
        f"/ui/users/{uid}",
        data={"action": "password", "password": "una new pass 4", "current_password": PASSWORD},
        follow_redirects=False,
    )
    assert done.status_code == 303 and "camfleet_session=" in done.headers["set-cookie"]
    logged_in(api, "una", "una new pass 4")


def test_site_admin_sees_only_users_and_roles_of_their_sites(api) -> None:
    setup_sites(api, "alpha", "beta")
    make_user(api, "boss", {"alpha": "admin"})
    make_user(api, "both", {"alpha": "viewer", "beta": "admin"})
    make_user(api, "betaonly", {"beta": "labeller"})
    boss = logged_in(api, "boss")
    listed = {u["username"]: u["roles"] for u in boss.get(f"{API}/users").json()}
    assert listed == {"boss": {"alpha": "admin"}, "both": {"alpha": "viewer"}}  # no beta users, no beta roles
    page = boss.get("/ui/users").text
    assert 'data-user="both"' in page and 'data-user="betaonly"' not in page and "beta: admin" not in page
    both_id = next(u["id"] for u in admin_session(api).get(f"{API}/users").json() if u["username"] == "both")
    granted = boss.put(f"{API}/users/{both_id}/roles/alpha", json={"role": "labeller"}).json()
    assert granted["roles"] == {"alpha": "labeller"}  # the answer hides the beta role too
    everyone = {u["username"] for u in admin_session(api).get(f"{API}/users").json()}
    assert {"boss", "both", "betaonly", "admin"} <= everyone  # hub admins still see everyone


@pytest.mark.parametrize(
    ("path", "method", "body"),
    [
        ("/users", "post", {"username": "x1", "password": "pw1234"}),
        ("/users", "post", {"username": "x2", "password": 12345678901}),
        ("/users/1", "patch", {"password": "pw1234", "current_password": "x" * 2000}),
        ("/auth/login", "post", {"username": "admin", "password": "y" * 2000}),
    ],
)
def test_validation_errors_never_echo_passwords(sqlite_api, path: str, method: str, body: dict[str, Any]) -> None:
    client = admin_session(sqlite_api) if path != "/auth/login" else anonymous(sqlite_api)
    r = client.request(method.upper(), f"{API}{path}", json=body)
    assert r.status_code == 422, r.text
    for key in ("password", "current_password"):
        if key in body:
            assert "password" in r.json()["detail"]  # the field is named …
            assert str(body[key]) not in r.text and str(body[key])[:20] not in r.text  # … its value is not
