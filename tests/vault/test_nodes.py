"""Health, seal status, init, unseal and join against real OpenBao nodes (OPENBAO-FACTS "Health and seal")."""

from __future__ import annotations

import base64
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from dr import errors, secret
from dr.adapters import localbao as bao
from dr.adapters import vault
from tests.harness_vault import Original, remember, wait_active


def test_health_codes_follow_the_node_role(original: Original, make_bao: Callable[..., bao.BaoCluster]) -> None:
    """sys/health answers 200 active, 429 standby, 501 not initialised, 503 sealed."""
    fresh = vault.VaultNode(make_bao(1).addresses[0])
    assert 501 == fresh.health_code()
    assert "uninitialized" == fresh.state().role
    active = original.cluster.active()
    standbys = [n for n in original.cluster.nodes if n is not active]
    assert 200 == active.health_code()
    assert [429, 429] == [n.health_code() for n in standbys]
    index = original.cluster.nodes.index(standbys[0])
    original.procs.restart(index)
    try:
        assert 503 == standbys[0].health_code()
        assert "sealed" == standbys[0].state().role
    finally:
        standbys[0].unseal(original.shares[:3])
        original.cluster.await_healthy(timeout=60)


def test_seal_status_carries_the_documented_fields(original: Original) -> None:
    """seal-status has type, initialized, sealed, t, n, progress, nonce, version, storage_type, cluster id."""
    status = original.cluster.nodes[0].seal_status()
    assert ("shamir", True, False, 3, 5, 0, "raft") == (
        status.seal_type,
        status.initialized,
        status.sealed,
        status.threshold,
        status.shares,
        status.progress,
        status.storage_type,
    )
    assert status.version.startswith("2.")
    assert status.cluster_id
    assert status.cluster_name


def test_unseal_progress_nonce_duplicates_and_reset(original: Original) -> None:
    """First share creates a nonce; a duplicate does not advance progress; reset clears it."""
    node = original.cluster.nodes[2]
    original.procs.restart(2)
    try:
        first = node.submit_share(original.shares[0])
        assert (1, True) == (first.progress, bool(first.nonce))
        again = node.submit_share(original.shares[0])
        assert (1, first.nonce) == (again.progress, again.nonce)
        assert 0 == node.reset_unseal().progress
    finally:
        node.unseal(original.shares[2:5])
        original.cluster.await_healthy(timeout=60)


def test_wrong_share_names_the_node_resets_progress_and_loses_nothing(
    original: Original, make_bao: Callable[..., bao.BaoCluster]
) -> None:
    """Another cluster's share fails the combine (400): error names the node, progress 0, valid shares then work."""
    other = vault.VaultNode(make_bao(1).addresses[0]).init(5, 3)
    remember(other.root_token, *other.shares)
    node = original.cluster.nodes[1]
    original.procs.restart(1)
    try:
        with pytest.raises(errors.PermanentError) as info:
            node.unseal([original.shares[0], original.shares[1], other.shares[0]])
        message = str(info.value)
        assert node.address in message
        assert "unseal share 3 was refused" in message
        assert "progress was reset to 0" in message
        assert "from another cluster" in info.value.hint
        for share in (*original.shares, *other.shares):
            assert share.reveal() not in info.value.message + info.value.hint
        assert 0 == node.seal_status().progress
    finally:
        assert not node.unseal(original.shares[:3]).sealed
        original.cluster.await_healthy(timeout=60)


def test_too_few_shares_says_how_many_more(original: Original) -> None:
    """Fewer shares than the threshold: still sealed, and the error says the threshold."""
    node = original.cluster.nodes[1]
    original.procs.restart(1)
    try:
        with pytest.raises(errors.PermanentError, match=r"still sealed after 2 share\(s\): progress 2/3"):
            node.unseal(original.shares[:2])
    finally:
        node.unseal(original.shares[:3])
        original.cluster.await_healthy(timeout=60)


def test_cluster_health_reports_peers_autopilot_and_voters(original: Original) -> None:
    """Init 5/3, all three unsealed: one active, two standbys, three voters, autopilot healthy."""
    health = original.cluster.health()
    assert health.healthy, health.problems
    assert ["active", "standby", "standby"] == sorted(n.role for n in health.nodes)
    assert 3 == len(health.peers or [])
    assert health.autopilot is not None
    assert (True, 1) == (health.autopilot["healthy"], health.autopilot["failure_tolerance"])


def test_join_and_unseal_an_uninitialised_node(make_bao: Callable[..., bao.BaoCluster]) -> None:
    """Without retry_join, a fresh node joins the leader through sys/storage/raft/join, then unseals as a standby."""
    procs = make_bao(2, retry_join=False)
    assert "retry_join" not in procs.nodes[1].config_path.read_text()
    leader, follower = (vault.VaultNode(a) for a in procs.addresses)
    assert not follower.seal_status().initialized  # a fresh node, before any leader exists
    result = leader.init(3, 2)
    remember(result.root_token, *result.shares)
    leader.unseal(result.shares[:2])
    wait_active(leader)
    # Without retry_join nothing joins by itself (a leftover retry_join once made this check race).
    assert not follower.seal_status().initialized
    follower.join(leader.address)
    assert not follower.unseal(result.shares[1:3]).sealed
    cluster = vault.VaultCluster(procs.addresses, token=result.root_token)
    assert cluster.active().address == leader.address
    assert {"node-0", "node-1"} == {
        p["node_id"] for p in vault.VaultNode(leader.address, token=result.root_token).raft_peers()
    }


def test_init_with_pgp_keys_returns_encrypted_shares(make_bao: Callable[..., bao.BaoCluster], tmp_path: Path) -> None:
    """With pgp_keys, the shares come back encrypted; decrypted with the private key they unseal."""
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    gpg = ["gpg", "--homedir", str(home), "--batch", "--pinentry-mode", "loopback", "--passphrase", ""]
    subprocess.run(
        [*gpg, "--quick-gen-key", "dr-test <dr@test>", "rsa2048", "encr", "never"], check=True, capture_output=True
    )
    public = subprocess.run([*gpg, "--export", "dr-test"], check=True, capture_output=True).stdout
    node = vault.VaultNode(make_bao(1).addresses[0])
    result = node.init(2, 2, pgp_keys=[base64.b64encode(public).decode()] * 2)
    remember(result.root_token, *result.shares)
    assert result.pgp_encrypted
    decrypted = []
    for share in result.shares:
        out = subprocess.run(
            [*gpg, "--decrypt"], input=base64.b64decode(share.reveal()), check=True, capture_output=True
        ).stdout.decode()
        decrypted.append(secret.Secret(out.strip()))
        remember(decrypted[-1])
    assert not node.unseal(decrypted).sealed
