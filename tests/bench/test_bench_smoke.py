"""Every benchmark keeps running: each bench's `--smoke` mode (a few seconds on the tests' carried data), one
test function per bench, checking that it finishes and prints its figures."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run_bench(script: str, *args: str, timeout: float = 1200) -> str:  # a bound, not a timing check
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )
    assert proc.returncode == 0, (
        f"bench/{script} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )
    return proc.stdout


def test_agent_bench_smoke() -> None:
    out = run_bench("agent.py", "--smoke")
    assert re.search(r"ratio agent / raw: \d+\.\d\d", out), out
    assert re.search(r"in the agent's layout \(\d+ streams x \d+ thread\(s\), batch 1\): +[\d.]+ frames/s", out), out
    rows = re.findall(r"^\| (plaza|quiet[^|]*) \| (on|off) \| (\d+) \| (\d+) \| ([\d.]+) \|", out, re.M)
    assert len(rows) == 4, out
    for _clip, gate, captured, classified, _share in rows:
        assert int(captured) > 0 and 0 < int(classified) <= int(captured)
        if gate == "off":
            assert classified == captured  # without the gate every frame is classified
    quiet_on = [r for r in rows if r[0].startswith("quiet") and r[1] == "on"][0]
    assert int(quiet_on[3]) < int(quiet_on[2])  # the held frames are gated out
    assert re.search(r"INT8 / FP32 = \d+\.\d\dx", out), out


def test_ingest_bench_smoke() -> None:
    out = run_bench("ingest.py", "--smoke")
    assert re.search(r"ratio hub / raw: \d+\.\d\d", out), out
    assert "'frames': 100," in out and "'dead_letters': 0," in out, out  # every frame stored by the hub


def test_soak_bench_smoke() -> None:
    out = run_bench("soak.py", "--smoke")
    sent = re.search(r"frames sent: (\d+)  stored: (\d+)  not stored by the end: 0  duplicated: 0", out)
    assert sent and int(sent.group(1)) == int(sent.group(2)) > 0, out
    assert re.search(r"ingest lag: p50 [\d.]+ s  p99 [\d.]+ s", out), out
    assert re.search(r"hub RSS: start \d+ MB", out), out


def test_fleet_sim_bench_smoke() -> None:
    out = run_bench("fleet_sim.py", "--smoke")
    rows = re.findall(r"^\| (\d+) \| \d+ \| (\d+)/(\d+) \| (\d+)/(\d+) \| ([\d.]+) \| ([\d.]+) \|", out, re.M)
    assert rows and rows[0][0] == "5", out
    for _n, ev_sent, ev_stored, fr_sent, fr_stored, _ev_p99, _fr_p99 in rows:
        assert int(ev_sent) > 0 and ev_sent == ev_stored and fr_sent == fr_stored, out
    assert re.search(r"largest N with p99 ingest lag < 1 s: \d+ cameras", out), out


def test_ood_bench_smoke() -> None:
    out = run_bench("ood.py", "--smoke")
    rows = re.findall(r"^\| (\S[^|]*) \| (\d\.\d{3}) \| (\d\.\d{3}) \|", out, re.M)
    methods = {name.strip() for name, *_ in rows}
    assert {"energy", "distance", "max(energy + distance)"} <= methods, out
    assert all(0.0 <= float(share) <= 1.0 and 0.0 <= float(auc) <= 1.0 for _, share, auc in rows)
    assert re.search(r"^\| pants \+ skirt \| \d\.\d\d / \d\.\d\d", out, re.M), out
    assert re.search(r"^best: ", out, re.M), out


def test_none_group_bench_smoke() -> None:
    out = run_bench("none_group.py", "--smoke")
    share = r"(\d\.\d\d) \((\d\.\d\d)\)"  # flagged (AUROC)
    row = re.search(rf"^\| pants \+ skirt \| shoes \((\d+)\) \| {share} → {share} \|", out, re.M)
    assert row and int(row.group(1)) > 0, out
    for label in (
        "rejected kind flagged",
        "new kinds flagged",
        "known flagged",
        "known accuracy",
        "rejected kind AUROC",
        "new kinds AUROC",
    ):
        assert re.search(rf"^mean {label}: \d\.\d{{3}} → \d\.\d{{3}}$", out, re.M), out


def test_rest_bench_smoke() -> None:
    out = run_bench("rest.py", "--smoke")
    assert re.search(r"raw ONNX Runtime, batch 32, preprocessed input: +\d+\.\d images/s", out), out
    # clients | images/s | raw | ratio | p50 | p99 | 503s
    rows = re.findall(r"^\| (\d+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \| (\d+) \|", out, re.M)
    assert [r[0] for r in rows] == ["1", "4", "16"], out
    assert all(float(r[1]) > 0 and float(r[2]) > 0 for r in rows), out  # every client count got answers
    assert re.search(r"^raw ONNX Runtime in the hub's layout \(\d+ runs at once x \d+ thread", out, re.M), out


def test_import_bench_smoke() -> None:
    out = run_bench("import.py", "--smoke")
    assert re.search(r"ratio import / raw: \d+\.\d\d", out), out
    assert "'imported': 48," in out, out  # every image of the zip imported


def test_label_errors_bench_smoke() -> None:
    out = run_bench("label_errors.py", "--smoke")
    line = r"^seed 0: 6 of 60 labels flipped; .*precision at k = 6: \d\.\d{3}; counted as likely mislabelled: \d+$"
    assert re.search(line, out, re.M), out
    rankings = dict(re.findall(r"^  (\S.*?) +(\d\.\d{3})   ", out, re.M))
    assert {"combined (shipped)", "margin", "oracle: model on true labels"} <= set(rankings), out
    assert all(0.0 <= float(v) <= 1.0 for v in rankings.values()), out


def test_triage_bench_smoke() -> None:
    out = run_bench("triage.py", "--smoke")
    rows = re.findall(r"^\| (sqlite|postgresql) \| ([^|]+) \| ([\d.]+) \| ([\d.]+) \|$", out, re.M)
    assert len(rows) == 10 and {r[0] for r in rows} == {"sqlite", "postgresql"}, out  # 5 timings per database
    assert all(0 < float(p50) <= float(p95) for _db, _name, p50, p95 in rows), out


def test_train_bench_smoke() -> None:
    out = run_bench("train.py", "--smoke")
    assert re.search(r"warm  \(embeddings cached\): +signed bundle in [\d.]+s", out), out
    # The hub's vectors are used when the quick recipe is the default bundle's; otherwise the job embeds itself.
    assert re.search(r"^hub job(.* [1-9]\d* vectors reused|: the hub's vectors .* are not this recipe's)", out, re.M), (
        out
    )
    assert re.search(r"^agent images/s at batch 1 .*: [\d.]+ for this bundle vs [\d.]+ ", out, re.M), out
    assert re.search(r"^validation through the ONNX bundle: accuracy \d\.\d{4} .* on 15 images", out, re.M), out
    assert re.search(r"^trained without shoes and skirt: .*unseen: .*shoes \d/5", out, re.M), out
    assert len(re.findall(r"^  \S.* CV acc \d\.\d{4} .* validation acc \d\.\d{4}", out, re.M)) >= 5, out
    assert re.search(r"embedding throughput: .* ratio \d+\.\d\d", out), out


def test_train_full_bench_smoke() -> None:
    out = run_bench("train_full.py", "--smoke")
    assert re.search(r"^epoch 1/1: \d+ s, training [\d.]+ images/s", out, re.M), out
    assert re.search(r"^training [\d.]+ images/s / raw [\d.]+ images/s = ratio \d+\.\d\d$", out, re.M), out
    assert re.search(r"^validation/ accuracy \d\.\d{4} on 15 images \(FP32\)", out, re.M), out


def test_quick_views_bench_smoke() -> None:
    out = run_bench("quick_views.py", "--smoke")
    assert re.search(r"today: std, mirror rows, image at inference +CV \d\.\d{4} +validation \d\.\d{4}", out), out
    assert re.search(r"std ⊕ squash concatenated +CV \d\.\d{4}", out), out
    assert re.search(r"lite0 \(squash\) +CV \d\.\d{4} +validation \d\.\d{4}", out), out  # --backbones rows
