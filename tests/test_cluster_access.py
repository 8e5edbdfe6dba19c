"""cluster.yaml's access and storage: instance profiles of least privilege, IMDSv2 only, one shared file system for
checkpoints, features and MLflow on every node, private token files; the service refuses a token file others can
read. Reads the files only: no cloud account, no Ray."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = yaml.safe_load((ROOT / "cluster.yaml").read_text())
NODE_TYPES = CLUSTER["available_node_types"]
TOKEN = "t" * 32


@pytest.mark.parametrize("node_type", sorted(NODE_TYPES))
def test_every_node_has_its_own_instance_profile_and_imdsv2_only(node_type):
    config = NODE_TYPES[node_type]["node_config"]
    # without IamInstanceProfile Ray creates ray-autoscaler-v1 with EC2 and S3 full access for every node
    profile = config["IamInstanceProfile"]["Name"]
    assert profile == ("tspo-ray-head" if node_type == CLUSTER["head_node_type"] else "tspo-ray-worker")
    assert config["MetadataOptions"] == {"HttpEndpoint": "enabled", "HttpTokens": "required",
                                         "HttpPutResponseHopLimit": 1}


def _statements(name):
    return json.loads((ROOT / "docs" / "iam" / f"{name}-policy.json").read_text())["Statement"]


def test_the_instance_profiles_policies_are_least_privilege():
    for name in ("head", "worker"):
        for st in _statements(name):
            actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
            assert st["Effect"] == "Allow" and not any("*" in a for a in actions), (name, st)
            assert not any(a.startswith("iam:") and a != "iam:PassRole" for a in actions)
            if any(a.startswith("s3:") for a in actions):  # reading one named bucket
                assert set(actions) <= {"s3:GetObject", "s3:ListBucket"}
                assert all(r.startswith("arn:aws:s3:::tspo-ray-data") for r in st["Resource"])
    worker = _statements("worker")
    assert {a for st in worker for a in st["Action"]} == {"s3:GetObject", "s3:ListBucket"}
    passes = [st for st in _statements("head") if st["Action"] == "iam:PassRole"]
    assert [st["Resource"] for st in passes] == ["arn:aws:iam::*:role/tspo-ray-worker"]


def _shared_paths():
    """Every /mnt/shared path the shipped configs write to (stores, run folders, MLflow)."""
    text = "\n".join(p.read_text() for p in sorted((ROOT / "configs").glob("*.yaml")))
    return sorted(set(re.findall(r"/mnt/shared[\w/.-]*", text)))


def test_a_shared_file_system_is_mounted_where_the_configs_write_and_required_to_start():
    mounts = [c for c in CLUSTER["initialization_commands"] if re.search(r"mount -t nfs4 .* /mnt/shared\b", c)]
    assert mounts, "nothing mounts the shared file system at /mnt/shared"
    assert _shared_paths() and all(p.startswith("/mnt/shared/") for p in _shared_paths())
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        commands = CLUSTER[key]
        check = next(i for i, c in enumerate(commands) if "mountpoint -q /mnt/shared" in c and "exit 1" in c)
        start = next(i for i, c in enumerate(commands) if "ray start" in c)
        assert check < start, f"{key}: a node without /mnt/shared would join the cluster"
    for name in ("answerer_qwen2_5_vl_7b", "answerer_llava_video_7b", "clip_l14_qwen2_5_vl_7b"):
        cfg = yaml.safe_load((ROOT / "configs" / f"{name}.yaml").read_text())
        assert cfg["tracking"]["tracking_uri"].startswith("sqlite:////mnt/shared/")
        assert cfg["train"]["output_dir"].startswith("/mnt/shared/")
        assert cfg["features"]["store"].startswith("/mnt/shared/")


def test_token_files_are_private_on_every_node_and_at_their_source():
    head = (ROOT / "cluster.yaml").read_text().split("cluster_name:")[0]
    assert re.search(r"ray get-auth-token --generate && chmod 600 ~/.ray/auth_token", head)
    assert "umask 077" in head and "serve_token" in head
    chmods = [c for c in CLUSTER["setup_commands"] if c.startswith("chmod 600")]
    assert chmods and "~/.ray/auth_token" in chmods[0] and "~/.tspo-ray/serve_token" in chmods[0]


@pytest.mark.parametrize("mode, who", [(0o644, "others"), (0o640, "its group"), (0o604, "others")])
def test_the_serve_token_file_is_refused_when_others_can_read_it(tmp_path, mode, who):
    from tspo_ray.serve.auth import configured_digest, token_digest

    path = tmp_path / "serve_token"
    path.write_text(TOKEN + "\n")
    path.chmod(mode)
    with pytest.raises(ValueError) as err:
        configured_digest(str(path), None, None)
    assert str(err.value).startswith(f"auth token file {path}: readable by {who} (mode {mode:04o})")
    assert f"chmod 600 {path}" in str(err.value)
    path.chmod(0o600)
    assert configured_digest(str(path), None, None) == token_digest(TOKEN)
