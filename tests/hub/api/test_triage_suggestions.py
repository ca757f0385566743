"""Frames sent by the agent's upload rules land in triage as NEW with the rule, the camera and the model's suggestion;
accepting the suggestion puts each image into its suggested group (one history entry, undoable)."""

from __future__ import annotations

from pathlib import Path

import paho.mqtt.publish as mqtt_publish
from apihelpers import wait_for

from camfleet_agent.uploads import REASON_OF
from camfleet_contract.envelope import UploadRuleName, encode_frame, new_header
from camfleet_contract.images import probe_image
from camfleet_contract.messages import Prediction

API = "/api/v1"
CLOTHES = f"{API}/sites/shop/classifiers/clothes"
WEATHER = f"{API}/sites/shop/classifiers/weather"


def _publish(mosquitto, topics, jpeg: bytes, camera: str, rule: UploadRuleName | None, preds) -> str:  # type: ignore[no-untyped-def]
    """One frame envelope as the agent sends it: the rule, its older `reason`, the top-1 of each classifier."""
    _fmt, w, h = probe_image(jpeg)
    reason = REASON_OF[rule] if rule else "sample"
    predictions = [Prediction(label=label, probability=p) for label, p in preds]
    header = new_header("agent-1", "shop", camera, jpeg, w, h, reason=reason, rule=rule, predictions=predictions)
    mqtt_publish.single(
        topics.frame("shop", camera), encode_frame(header, jpeg), qos=1, hostname=mosquitto.host, port=mosquitto.port
    )
    return header.frame_id


def test_rule_frames_arrive_with_suggestions_and_accepting_moves_them(
    hub_factory, db_url: str, mosquitto, clothing_subset: Path
) -> None:
    api = hub_factory(db_url, ingest=True)
    c, topics = api.client, api.services.topics
    assert c.post(f"{API}/sites", json={"name": "shop"}).status_code == 201
    for cam in ("door", "till"):
        assert c.post(f"{API}/sites/shop/cameras", json={"name": cam}).status_code == 201
    for url, groups in ((CLOTHES, ("dress", "hat", "shoes")), (WEATHER, ("sunny", "Rain"))):
        assert c.post(f"{API}/sites/shop/classifiers", json={"name": url.rsplit("/", 1)[1]}).status_code == 201
        for g in groups:
            assert c.post(f"{url}/groups", json={"name": g}).status_code == 201
    jpegs = [p.read_bytes() for p in sorted((clothing_subset / "validation" / "hat").glob("*.jpg"))[:4]]

    # both classifiers run on the door camera: the frame carries the top-1 of each, without their names
    low = _publish(mosquitto, topics, jpegs[0], "door", "low_confidence", [("hat", 0.41), ("rain", 0.93)])
    odd = _publish(mosquitto, topics, jpegs[1], "till", "anomalous", [("dress", 0.3)])
    unknown = _publish(mosquitto, topics, jpegs[2], "door", "sample", [("tabby", 0.7)])
    bare = _publish(mosquitto, topics, jpegs[3], "door", "class_change", [])

    rows = wait_for(
        lambda: (r := c.get(f"{CLOTHES}/triage").json()) and len(r) == 4 and r, "4 NEW camera images in triage"
    )
    by_frame = {r["frame_id"]: r for r in rows}
    assert set(by_frame) == {low, odd, unknown, bare}
    assert all(r["status"] == "NEW" and r["source"] == "camera" for r in rows)
    first = by_frame[low]
    assert (first["camera"], first["agent"], first["rule"], first["rule_text"]) == (
        "door",
        "agent-1",
        "low_confidence",
        "low confidence",
    )
    assert first["suggestion"] == {"label": "hat", "probability": 0.41, "group": "hat"}
    assert by_frame[odd]["camera"] == "till" and by_frame[odd]["rule_text"] == "anomalous"
    assert by_frame[odd]["suggestion"] == {"label": "dress", "probability": 0.3, "group": "dress"}
    # a class the classifier has no group for is shown, but there is nothing to accept
    assert by_frame[unknown]["suggestion"] == {"label": "tabby", "probability": 0.7, "group": None}
    assert by_frame[unknown]["rule_text"] == "sampled"
    assert by_frame[bare]["suggestion"] is None and by_frame[bare]["rule"] == "class_change"
    # the other classifier picks its own answer out of the same frame (group names match case-insensitively)
    weather = {r["frame_id"]: r for r in c.get(f"{WEATHER}/triage").json()}
    assert weather[low]["suggestion"] == {"label": "rain", "probability": 0.93, "group": "Rain"}
    assert weather[odd]["suggestion"] is None or weather[odd]["suggestion"]["group"] is None

    # filters: by rule, by camera; unknown values are refused naming the field
    assert [r["frame_id"] for r in c.get(f"{CLOTHES}/triage", params={"rule": "low_confidence"}).json()] == [low]
    assert [r["frame_id"] for r in c.get(f"{CLOTHES}/triage", params={"camera": "till"}).json()] == [odd]
    both = c.get(f"{CLOTHES}/triage", params={"camera": "door", "rule": "sample"}).json()
    assert [r["frame_id"] for r in both] == [unknown]
    bad = c.get(f"{CLOTHES}/triage", params={"camera": "nowhere"})
    assert bad.status_code == 422 and "camera='nowhere'" in bad.text
    assert c.get(f"{CLOTHES}/triage", params={"rule": "bogus"}).status_code == 422
    assert c.get(f"{CLOTHES}/triage", params={"status": "GROUP"}).status_code == 422
    page = c.get(f"{CLOTHES}/triage", params={"limit": 2}).json()
    rest = c.get(f"{CLOTHES}/triage", params={"after_id": page[-1]["id"]}).json()
    assert [r["id"] for r in page + rest] == sorted(r["id"] for r in rows)

    # accepting: refused as a whole while one image has no suggestion naming a group
    ids = {f: by_frame[f]["id"] for f in by_frame}
    refused = c.post(f"{CLOTHES}/images/accept-suggestions", json={"ids": [ids[low], ids[unknown]]})
    assert refused.status_code == 422 and str(ids[unknown]) in refused.json()["detail"]
    assert len(c.get(f"{CLOTHES}/triage").json()) == 4

    entry = c.post(f"{CLOTHES}/images/accept-suggestions", json={"ids": [ids[low], ids[odd]]})
    assert entry.status_code == 200, entry.text
    assert entry.json()["action"] == "move" and sorted(entry.json()["image_ids"]) == sorted([ids[low], ids[odd]])
    assert {r["frame_id"] for r in c.get(f"{CLOTHES}/triage").json()} == {unknown, bare}
    assert [i["frame_id"] for i in c.get(f"{CLOTHES}/images", params={"group": "hat"}).json()] == [low]
    assert [i["frame_id"] for i in c.get(f"{CLOTHES}/images", params={"group": "dress"}).json()] == [odd]
    # the other classifier's images of the same frames are untouched
    assert len(c.get(f"{WEATHER}/triage").json()) == 4

    # accepting again: they are no longer NEW
    stale = c.post(f"{CLOTHES}/images/accept-suggestions", json={"ids": [ids[low]]})
    assert stale.status_code == 409

    # one undo puts both back into triage, suggestion and all
    assert c.post(f"{API}/history/{entry.json()['id']}/undo").status_code == 200
    back = {r["frame_id"]: r for r in c.get(f"{CLOTHES}/triage").json()}
    assert set(back) == {low, odd, unknown, bare} and back[low]["suggestion"]["group"] == "hat"

    # the camera sends the same picture again (same bytes: the same image) once a newer model knows its class:
    # triage shows the latest frame's rule, camera and suggestion, which can then be accepted
    again = _publish(mosquitto, topics, jpegs[2], "till", "low_confidence", [("shoes", 0.55)])
    assert again != unknown

    def latest() -> dict | None:  # type: ignore[type-arg]
        row = next(r for r in c.get(f"{CLOTHES}/triage").json() if r["id"] == ids[unknown])
        return row if row["suggestion"]["group"] == "shoes" else None

    row = wait_for(latest, "the newer frame's suggestion")
    assert (row["camera"], row["rule"], row["frame_id"]) == ("till", "low_confidence", unknown)
    assert len(c.get(f"{CLOTHES}/triage").json()) == 4
    assert [r["id"] for r in c.get(f"{CLOTHES}/triage", params={"camera": "till"}).json()] == [ids[odd], ids[unknown]]
    assert [r["frame_id"] for r in c.get(f"{CLOTHES}/triage", params={"rule": "sample"}).json()] == []
    moved = c.post(f"{CLOTHES}/images/accept-suggestions", json={"ids": [ids[unknown]]})
    assert moved.status_code == 200, moved.text
    assert c.get(f"{API}/images/{ids[unknown]}").json()["group"] == "shoes"
