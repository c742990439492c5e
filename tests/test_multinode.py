"""Past one machine: the trainer as 2 "nodes" x 1 process on localhost through torchrun's c10d rendezvous
(gloo), the launch examples/cluster/ uses on a cluster. ``log.rank_audit`` makes each rank write the study
ids it drew per step and the sha256 of its final weights (cxrtrain/rankaudit.py)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node(node_rank: int, port: int, shards: Path, out: Path) -> subprocess.Popen:
    torchrun = Path(sys.executable).parent / "torchrun"
    cmd = [
        str(torchrun),
        "--nnodes", "2", "--nproc_per_node", "1", "--node_rank", str(node_rank),
        "--rdzv_backend", "c10d", "--rdzv_endpoint", f"localhost:{port}", "--rdzv_id", "cxrkit-test",
        "-m", "cxrtrain.cli.app", "run", str(shards), "--out", str(out),
        "--set", "epochs=2", "--set", "batch_size=4", "--set", "device=cpu",
        "--set", "model.image_size=32", "--set", "model.embed_dim=32", "--set", "log.rank_audit=true",
    ]  # fmt: skip
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow  # two torchrun agents, a rendezvous and two short trainings: ~1 minute on 2 shared cores
def test_two_nodes_see_disjoint_data_and_end_identical(demo_shards, tmp_path):
    out, port = tmp_path / "run", _free_port()
    nodes = [_node(i, port, demo_shards, out) for i in (0, 1)]
    logs = []
    for p in nodes:
        try:
            logs.append(p.communicate(timeout=400)[0])
        except subprocess.TimeoutExpired:
            for q in nodes:
                q.kill()
            pytest.fail("the two-node run did not finish in 400 s")
    assert all(p.returncode == 0 for p in nodes), "\n----\n".join(x[-3000:] for x in logs)
    assert "world 2" in "".join(logs)
    audits = [json.loads((out / "ranks" / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert [a["rank"] for a in audits] == [0, 1] and all(a["world"] == 2 for a in audits)
    # the same number of steps on both ranks, each step drew batch_size studies
    assert [s["step"] for s in audits[0]["steps"]] == [s["step"] for s in audits[1]["steps"]]
    assert len(audits[0]["steps"]) >= 4 and all(len(s["study_id"]) == 4 for a in audits for s in a["steps"])
    for epoch in (0, 1):
        seen = [{i for s in a["steps"] if s["epoch"] == epoch for i in s["study_id"]} for a in audits]
        assert seen[0] and seen[1] and not seen[0] & seen[1], (epoch, seen)
    # DDP keeps the replicas in step: the final weights hash the same on both nodes, and equal last/'s weights
    assert audits[0]["weights_sha256"] == audits[1]["weights_sha256"]
    from cxrtrain.checkpoint import load_checkpoint
    from cxrtrain.rankaudit import weights_sha256

    model, _ = load_checkpoint(out / "last")
    assert weights_sha256(model) == audits[0]["weights_sha256"]
