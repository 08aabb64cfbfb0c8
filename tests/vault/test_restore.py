"""Restoring cluster A's snapshot into fresh clusters (OPENBAO-FACTS "Restoring into a new cluster")."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable
from pathlib import Path

import hvac
import pytest

from dr import errors
from dr.adapters import localbao as bao
from dr.adapters import vault
from tests.harness_vault import OLD_KUBE_HOST, Original, init_and_unseal, read_all, remember, wait_active


@pytest.fixture(scope="module")
def snapshot(original: Original, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A's snapshot on disk, as a store would hold it."""
    path = tmp_path_factory.mktemp("snap") / "a.snap"
    with path.open("wb") as out:
        original.cluster.active().with_token(original.token).snapshot(out)
    return path


def tampered(data: bytes) -> bytes:
    """The same archive, well-formed gzip and tar, with one byte of state.bin changed."""
    members: list[tuple[tarfile.TarInfo, bytes]] = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for m in tar.getmembers():
            members.append((m, tar.extractfile(m).read()))  # type: ignore[union-attr]
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for info, content in members:
            if info.name == "state.bin":
                content = content[:-1] + bytes([content[-1] ^ 1])
            tar.addfile(info, io.BytesIO(content))
    return out.getvalue()


def assert_reported_as_the_servers_say(states: list[vault.NodeState], target: vault.VaultCluster) -> None:
    """What restore() reported is what the servers say now (no assumption either way)."""
    for state, node in zip(states, target.nodes, strict=True):
        assert state.seal is not None
        now = node.seal_status()
        if state.seal.sealed:
            assert now.sealed


def test_foreign_snapshot_restore_with_other_share_settings(
    original: Original, snapshot: Path, make_bao: Callable[..., bao.BaoCluster]
) -> None:
    """Into B (init 1/1): plain restore refused; force restore; stale t/n until restart; A's shares, data, tokens."""
    procs = make_bao(1, generate_root=True)
    target, b_init = init_and_unseal(procs, 1, 1)
    node = target.nodes[0]
    b_raw = hvac.Client(url=node.address, token=b_init.root_token.reveal())

    # A plain restore of another cluster's snapshot is refused: the seal check fails.
    with pytest.raises(hvac.exceptions.InvalidRequest, match="could not verify hash file"):
        b_raw.sys.restore_raft_snapshot(snapshot.read_bytes())

    with snapshot.open("rb") as stream:
        states = target.restore(stream)
    assert_reported_as_the_servers_say(states, target)

    status = node.seal_status()
    if status.sealed and (status.threshold, status.shares) == (1, 1):
        # The process still caches B's seal config: A's share is refused as "invalid key size".
        with pytest.raises(
            errors.SealConfigStale, match=r"seal configuration of before the restore \(t=1, n=1\)"
        ) as info:
            node.unseal(original.shares[:3])
        assert "restart this Vault pod" in info.value.hint
    procs.restart(0)
    after = node.seal_status()
    assert (True, 3, 5) == (after.sealed, after.threshold, after.shares)
    assert not node.unseal(original.shares[2:5]).sealed
    wait_active(node)

    # Data, cluster identity and auth config come from A; Raft membership stays B's own.
    assert original.cluster.nodes[0].seal_status().cluster_id == node.seal_status().cluster_id
    a_on_b = hvac.Client(url=node.address, token=original.token.reveal())
    assert original.secrets == read_all(a_on_b, sorted(original.secrets))
    peers = vault.VaultNode(node.address, token=original.token).raft_peers()
    assert [("node-0", f"127.0.0.1:{procs.nodes[0].cluster_port}")] == [(p["node_id"], p["address"]) for p in peers]

    # B's own root token is dead; A's works.
    with pytest.raises(errors.PermanentError, match="permission denied"):
        node.with_token(b_init.root_token).lookup_self()
    assert ["root"] == node.with_token(original.token).lookup_self()["policies"]

    # Kubernetes auth still points at the old cluster until it is written again; a write replaces it all.
    admin = node.with_token(original.token)
    assert OLD_KUBE_HOST == admin.read_kubernetes_auth()["kubernetes_host"]
    old = admin.read_kubernetes_auth()
    new = {
        "kubernetes_host": "https://new-cluster.example:6443",
        "kubernetes_ca_cert": old["kubernetes_ca_cert"],
        "disable_local_ca_jwt": True,
    }
    admin.write_kubernetes_auth(new)
    now = admin.read_kubernetes_auth()
    assert "https://new-cluster.example:6443" == now["kubernetes_host"]
    assert "https://old-cluster.example" == old["issuer"]
    assert "" == now.get("issuer", "")  # not carried over: the write replaced the whole config

    # generate-root with A's shares on a listener that allows it: a working token, then revoked.
    generated = node.generate_root(original.shares[:3])
    remember(generated)
    holder = node.with_token(generated)
    assert ["root"] == holder.lookup_self()["policies"]
    holder.revoke_self()
    with pytest.raises(errors.PermanentError, match="permission denied"):
        holder.lookup_self()


def test_foreign_snapshot_restore_with_the_same_share_settings(
    original: Original, snapshot: Path, make_bao: Callable[..., bao.BaoCluster]
) -> None:
    """Into B initialised 5/3 like A: a tampered snapshot is refused even forced; A's shares unseal the real one."""
    procs = make_bao(1)
    target, b_init = init_and_unseal(procs, 5, 3)
    # snapshot-force skips only the seal check: the SHA256SUMS integrity check still runs on the server.
    with pytest.raises(errors.SnapshotError, match=r'hash check failed for "state\.bin"'):
        target.nodes[0].with_token(b_init.root_token).force_restore(io.BytesIO(tampered(snapshot.read_bytes())))
    assert not target.nodes[0].seal_status().sealed
    with snapshot.open("rb") as stream:
        states = target.restore(stream)
    assert_reported_as_the_servers_say(states, target)
    node = target.nodes[0]
    assert not node.unseal(original.shares[1:4]).sealed
    wait_active(node)
    a_on_b = hvac.Client(url=node.address, token=original.token.reveal())
    assert original.secrets == read_all(a_on_b, sorted(original.secrets))


def test_restore_aimed_at_a_standby_is_refused_before_it_is_sent(original: Original, snapshot: Path) -> None:
    """force_restore on a standby raises, names the active node, and the standby is untouched."""
    active = original.cluster.active()
    standby = next(n for n in original.cluster.nodes if n is not active).with_token(original.token)
    with pytest.raises(errors.PermanentError, match="refusing to restore to a standby") as info:
        standby.force_restore(io.BytesIO(snapshot.read_bytes()))
    assert active.address in str(info.value)
    assert ("standby", False) == (standby.state().role, standby.seal_status().sealed)


def test_generate_root_is_off_by_default_and_says_which_setting(original: Original) -> None:
    """On a default listener (OpenBao ≥ 2.5.3) generate-root is 405: the error names the listener setting."""
    with pytest.raises(errors.PermanentError, match="generate-root is disabled") as info:
        original.cluster.active().generate_root(original.shares[:3])
    assert vault.GENERATE_ROOT_SETTING in info.value.hint
