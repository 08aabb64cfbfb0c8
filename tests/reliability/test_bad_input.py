"""The bad-input catalogue: each hostile or mistaken input, the exit code and message it gets.

None may print a traceback or leave a half-written file. Real servers
where the input meets one: OpenBao (cluster A and a second cluster for
"another cluster's share"), S3 (versitygw), the sandbox's API server.
"""

from __future__ import annotations

import base64
import json
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path

import boto3
import pytest
import yaml
from click.testing import CliRunner, Result

from dr import cli, secret
from dr.adapters import certs, kube, sandbox_process
from dr.adapters import localbao as bao
from tests.harness_vault import Original, init_and_unseal, remember
from tests.recovery.test_bootstrap import REPO


def dr(*args: str, env: dict[str, str] | None = None) -> Result:
    result = CliRunner().invoke(cli.cli, ["--log-format", "console", *args], env=env)
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def no_tmp_files(*roots: Path) -> None:
    for root in roots:
        assert [] == [str(p) for p in root.rglob("*") if ".tmp" in p.name or p.name.endswith(".part")]


def bomb() -> str:
    text = 'x0: &a0 ["x","x","x","x","x","x","x","x","x"]\n'
    return text + "".join(f"x{i}: &a{i} [{','.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 9))


CONFIGS = [
    ("state_dir: [unclosed\n", "invalid YAML at line 2, column 1"),
    (bomb(), "expands through its aliases to more than 1000000 nodes"),
    ("a" * (1024 * 1024 + 1), "a dr config is at most 1048576"),
    ("clustr: {name: x}\n", "field `clustr`: unknown field (check its spelling)"),
    ("cluster: {name: Not_A_DNS_Label}\n", "field `cluster.name`: String should match pattern"),
    ("vault: {shares: 3, threshold: 5}\n", "threshold 5 is more than shares 3"),
    ("- a list\n- not a mapping\n", "the top level must be a mapping of settings, not a list"),
    ("steps: {argo-sync: {timeout: soon}}\n", "'soon' is not a duration"),
    ("targets: {rto: -5m}\n", "field `targets.rto`"),
]


@pytest.mark.parametrize(("text", "message"), CONFIGS, ids=[m[:30] for _, m in CONFIGS])
def test_a_bad_config_file_is_exit_2_naming_the_problem(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "dr.yaml"
    path.write_text(text)
    result = dr("--config", str(path), "plan")
    assert 2 == result.exit_code, result.output
    assert message in result.output
    assert "runbook: runbooks/README.md#configuration" in result.output


def test_a_config_that_is_not_text_or_not_a_file_is_exit_2(tmp_path: Path) -> None:
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\xff\xfe\x00\x01 not utf-8")
    assert "cannot read config file" in dr("--config", str(binary), "plan").output
    assert 2 == dr("--config", str(tmp_path), "plan").exit_code  # a directory
    missing = dr("--config", str(tmp_path / "nope.yaml"), "plan")
    assert (2, True) == (missing.exit_code, "config file not found" in missing.output)


# -- shares --------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def other_cluster_share(make_bao: Callable[..., bao.BaoCluster]) -> secret.Secret:
    """A real share of another OpenBao cluster: the right shape, the wrong key."""
    _, result = init_and_unseal(make_bao(1), 5, 3)
    remember(*result.shares, result.root_token)
    return result.shares[0]


def _share_files(tmp_path: Path, values: list[str]) -> list[str]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    args = []
    for n, value in enumerate(values):
        path = tmp_path / f"share-{n}"
        path.write_text(value + "\n")
        path.chmod(0o600)
        args += ["--key-file", str(path)]
    return args


def test_wrong_shares_are_refused_and_leave_the_node_sealed_with_progress_reset(
    original: Original, other_cluster_share: secret.Secret, tmp_path: Path
) -> None:
    good = [s.reveal() for s in original.shares[:3]]
    cases = {
        "too short": (["c2hvcnQ=", *good[1:]], 1, "unseal share 1 was refused"),
        "not base64 or hex": (["%%% not a share %%%", *good[1:]], 1, "unseal share 1 was refused"),
        # A share of another cluster has the right shape: OpenBao takes it and refuses only the combination.
        "from another cluster": ([other_cluster_share.reveal(), *good[1:]], 1, "unseal share 3 was refused"),
        "the same share three times": ([good[0]] * 3, 1, "still sealed after 3 share(s): progress 1/3"),
    }
    original.procs.restart(2)
    sealed = original.procs.addresses[2]
    try:
        for name, (values, code, message) in cases.items():
            result = dr(
                "vault", "unseal", "--address", sealed, *_share_files(tmp_path / name.replace(" ", "-"), values)
            )
            assert code == result.exit_code, (name, result.output)
            assert message in result.output, (name, result.output)
            assert "runbook: runbooks/vault-unseal.md" in result.output, name
            assert original.cluster.nodes[2].seal_status().sealed, name
    finally:
        original.cluster.nodes[2].unseal(original.shares[:3])
        original.cluster.await_healthy(timeout=60)


# -- snapshots -----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved(original: Original, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with one real snapshot of cluster A."""
    store = tmp_path_factory.mktemp("store")
    result = dr(
        "snapshot", "save", "--store", str(store), "--cluster", "a",
        env={"VAULT_TOKEN": original.token.reveal(), "BAO_ADDR": original.procs.addresses[0]},
    )  # fmt: skip
    assert 0 == result.exit_code, result.output
    return store


def _tampered(saved: Path, tmp_path: Path, change: Callable[[Path, Path], None]) -> Path:
    store = tmp_path / "store"
    shutil.copytree(saved, store)
    (snap,) = (store / "a").glob("*.snap")
    change(snap, snap.with_suffix(".json"))
    return store


def _truncate(snap: Path, manifest: Path) -> None:
    snap.write_bytes(snap.read_bytes()[: snap.stat().st_size // 2])


def _flip(snap: Path, manifest: Path) -> None:
    data = bytearray(snap.read_bytes())
    data[len(data) // 2] ^= 0x01
    snap.write_bytes(bytes(data))


def _other_tool(snap: Path, manifest: Path) -> None:
    """A gzip'd tar that is not a Raft snapshot (an etcd backup, say), with a manifest that matches it."""
    member = snap.parent / "member.db"
    member.write_bytes(b"etcd" * 1000)
    with tarfile.open(snap, "w:gz") as tar:
        tar.add(member, arcname="member/snap/db")
    member.unlink()
    _rewrite_manifest(snap, manifest)


def _text(snap: Path, manifest: Path) -> None:
    snap.write_text("this is not a snapshot\n")
    _rewrite_manifest(snap, manifest)


def _rewrite_manifest(snap: Path, manifest: Path) -> None:
    import hashlib

    data = json.loads(manifest.read_text())
    data.update(size=snap.stat().st_size, sha256=hashlib.sha256(snap.read_bytes()).hexdigest())
    manifest.write_text(json.dumps(data))


def _manifest_size(snap: Path, manifest: Path) -> None:
    data = json.loads(manifest.read_text())
    data["size"] += 1
    manifest.write_text(json.dumps(data))


def _manifest_garbage(snap: Path, manifest: Path) -> None:
    manifest.write_text("{not json")


SNAPSHOTS = [
    (_truncate, 1, "sha256"),
    (_flip, 1, "sha256"),
    (_other_tool, 1, "snapshot is incomplete: missing meta.json, state.bin, SHA256SUMS, SHA256SUMS.sealed"),
    (_text, 1, "snapshot is not a valid gzip stream"),
    (_manifest_size, 1, "bytes; its manifest says"),
    (_manifest_garbage, 1, "no good snapshot for cluster a"),
]


@pytest.mark.parametrize(("change", "code", "message"), SNAPSHOTS, ids=[c.__name__[1:] for c, _, _ in SNAPSHOTS])
def test_a_bad_snapshot_fails_verify_naming_why(
    saved: Path, tmp_path: Path, change: Callable[[Path, Path], None], code: int, message: str
) -> None:
    store = _tampered(saved, tmp_path, change)
    result = dr("snapshot", "verify", "latest", "--store", str(store), "--cluster", "a")
    assert code == result.exit_code, result.output
    assert message in result.output
    if change is _manifest_garbage:  # the listing names the manifest it could not read
        listed = dr("snapshot", "list", "--store", str(store), "--cluster", "a").output
        assert "problem:" in listed
        assert ".json" in listed
    no_tmp_files(store)


STORES = [
    ("file:///../../etc", "contains '..'"),
    ("../relative/../store", "contains '..'"),
    ("file://elsewhere/x", "names a host; use file:///absolute/path"),
    ("ftp://host/x", "has an unknown scheme 'ftp'"),
    ("s3:///no-bucket", "has no bucket"),
]


@pytest.mark.parametrize(("url", "message"), STORES, ids=[u for u, _ in STORES])
def test_a_bad_store_url_is_exit_2(url: str, message: str) -> None:
    result = dr("snapshot", "list", "--store", url)
    assert 2 == result.exit_code, result.output
    assert message in result.output


def test_s3_prefixes_with_odd_characters_round_trip(original: Original, s3_env: str) -> None:
    s3 = boto3.client("s3", endpoint_url=s3_env)
    s3.create_bucket(Bucket="odd")
    store = "s3://odd/we ird/ünï+code%2F/…"
    env = {"VAULT_TOKEN": original.token.reveal(), "BAO_ADDR": original.procs.addresses[0]}
    args = ("--store", store, "--s3-endpoint", s3_env, "--cluster", "a")
    saved = dr("snapshot", "save", *args, env=env)
    assert 0 == saved.exit_code, saved.output
    listed = json.loads(dr("snapshot", "list", *args, "-o", "json").stdout)
    assert 1 == len(listed["snapshots"])
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="odd")["Contents"]]
    assert all(k.startswith("we ird/ünï+code%2F/…/a/") for k in keys), keys
    assert 0 == dr("snapshot", "verify", "latest", *args).exit_code


# -- the cluster ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("bad-input-sandbox")
    info = sandbox_process.up(directory)
    assert info.kubeconfig is not None
    yield info.kubeconfig
    sandbox_process.down(directory)


def _recover_existing(tmp_path: Path, kubeconfig: Path, store: Path, **extra: object) -> Result:
    """A recovery into an existing cluster, with a good snapshot in the store so that only the cluster side fails."""
    config = {
        "state_dir": str(tmp_path / "state"),
        "cluster": {"name": "a", "provider": "kubeconfig", "kubeconfig": str(kubeconfig)},
        "platform": {"repo": str(REPO / "examples" / "platform")},
        "snapshots": {"store": str(store)},
        **extra,
    }
    (tmp_path / "dr.yaml").write_text(yaml.safe_dump(config))
    return dr("--config", str(tmp_path / "dr.yaml"), "recover", "--cluster", "existing", "--skip-preflight")


def test_a_kubeconfig_with_the_wrong_ca_is_refused_by_tls_and_says_so(
    tmp_path: Path, sandbox: Path, saved: Path
) -> None:
    doc = yaml.safe_load(sandbox.read_text())
    ca = certs.CertificateAuthority(tmp_path / "other-ca")  # any CA but the sandbox's
    doc["clusters"][0]["cluster"]["certificate-authority-data"] = base64.b64encode(ca.cert_path.read_bytes()).decode()
    bad = tmp_path / "kubeconfig"
    bad.write_text(yaml.safe_dump(doc))
    kube.Kube(sandbox)  # the server's discovery cached, as any earlier run leaves it: the first call is not it
    result = _recover_existing(tmp_path, bad, saved)
    assert 1 == result.exit_code, result.output
    assert "certificate verify failed" in result.output
    assert "fetch a fresh kubeconfig" in result.output  # permanent: no waiting out the step's timeout
    no_tmp_files(tmp_path / "state")


def test_a_kubeconfig_pointing_nowhere_is_exit_1_naming_the_address(tmp_path: Path, sandbox: Path, saved: Path) -> None:
    doc = yaml.safe_load(sandbox.read_text())
    doc["clusters"][0]["cluster"]["server"] = "https://127.0.0.1:1"
    nowhere = tmp_path / "kubeconfig"
    nowhere.write_text(yaml.safe_dump(doc))
    result = _recover_existing(tmp_path, nowhere, saved)
    assert 1 == result.exit_code, result.output
    assert "127.0.0.1:1" in result.output
    assert "resume with: dr recover --resume" in result.output


def test_a_root_app_file_that_is_not_an_application_is_named(tmp_path: Path, sandbox: Path, saved: Path) -> None:
    repo = tmp_path / "platform"
    shutil.copytree(REPO / "examples" / "platform", repo)
    (repo / "root-app.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: root}\n")
    result = _recover_existing(tmp_path, sandbox, saved, platform={"repo": str(repo)})
    assert 2 == result.exit_code, result.output
    assert "the root app file must hold exactly one named Argo CD Application" in result.output
    assert "not v1 ConfigMap" in result.output
    no_tmp_files(tmp_path / "state")
