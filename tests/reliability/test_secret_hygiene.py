"""Secret hygiene: a full drill with every secret known, then every byte it produced is scanned for them.

The secrets: every value the process wrapped as a `Secret` during the run
(both Vaults' unseal shares and root tokens, the throwaway init, service
account JWTs, Vault tokens from logins), the canary values and the Discord
webhook read back from the kept recovered Vault, and the key sink's files.
Each is looked for raw, in base64 and in hex, in: the output and logs of the
drill (JSON) and of secret-handling commands (console), every file the runs
wrote (checkpoints, reports in every format, the SQLite history, drill
markers, downloaded snapshots), and the command line of every process on the
machine. Not scanned: the key sink (it is where shares belong, mode 0600)
and the kept platform's own data directory (Vault's encrypted storage,
kubeconfig).
"""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import hvac
from click.testing import CliRunner, Result

from dr import cli, secret
from dr.adapters import vault
from tests.drills.test_drill import one_replica
from tests.recovery.test_bootstrap import write_config


def dr(config: Path, *args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli.cli, ["--config", str(config), *args], env=env)


def spellings(value: str) -> set[str]:
    raw = value.encode()
    return {value, base64.b64encode(raw).decode().rstrip("="), raw.hex()}


def leaks(needles: set[str], haystacks: dict[str, bytes]) -> list[str]:
    found = []
    for where, data in haystacks.items():
        for needle in needles:
            if needle.encode() in data:
                found.append(f"{where}: {needle[:6]}…")
    return found


def argv_of_every_process() -> dict[str, bytes]:
    out = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                out[f"/proc/{proc.name}/cmdline"] = (proc / "cmdline").read_bytes()
            except OSError:
                continue
    return out


def test_no_secret_of_a_drill_reaches_its_logs_files_reports_or_argv(tmp_path: Path) -> None:
    config = write_config(tmp_path, drills={"canaries": 2}, platform={"repo": str(one_replica(tmp_path))})
    state = tmp_path / "state"
    reports = tmp_path / "reports"
    outputs: dict[str, bytes] = {}
    try:
        ran = dr(config, "--log-format", "json", "drill", "--keep", "--report-dir", str(reports))
        assert 0 == ran.exit_code, ran.output[-3000:]
        outputs["drill stdout+stderr (json logs)"] = ran.output.encode()
        (root,) = (state / "drills").iterdir()
        keys = root / "source" / "keys"
        token = (keys / "root-token").read_text().strip()
        shares = [p.read_text().strip() for p in sorted(keys.glob("share-*"))]
        kept = json.loads((root / "report.json").read_text())
        run = json.loads((root / "target" / "runs" / kept["recovery_run_id"] / "checkpoint.json").read_text())
        addresses = run["steps"]["vault-unseal"]["outputs"]["addresses"]
        client = hvac.Client(url=vault.VaultCluster(addresses).active().address, token=token)
        listed = client.secrets.kv.v2.list_secrets(path=f"dr-drill/{kept['id']}", mount_point="secret")["data"]["keys"]
        canaries = [
            client.secrets.kv.v2.read_secret_version(
                path=f"dr-drill/{kept['id']}/{name}", mount_point="secret", raise_on_deleted_version=True
            )["data"]["data"]["value"]
            for name in listed
        ]
        assert 2 == len(canaries)  # the pre-snapshot ones; the post ones were lost with the source
        webhook = client.secrets.kv.v2.read_secret_version(
            path="alerts/discord", mount_point="secret", raise_on_deleted_version=True
        )["data"]["data"]["webhook_url"]
        # The same secrets through the console renderer, in commands that handle them.
        env = {"VAULT_TOKEN": token}
        for args in (
            ("vault", "status", *(f"--address={a}" for a in addresses)),
            (
                "vault",
                "unseal",
                "--all",
                *(f"--address={a}" for a in addresses),
                *(f"--key-file={p}" for p in sorted(keys.glob("share-*"))[:3]),
            ),
            ("snapshot", "save", "--store", str(tmp_path / "store")),
        ):
            env["BAO_ADDR"] = addresses[0]  # snapshot save finds the active node from any of them
            done = dr(config, "--log-format", "console", "-v", *args, env=env)
            assert 0 == done.exit_code, done.output  # vault status too: the recovery waited for every voter
            outputs[f"dr {' '.join(args[:2])} (console logs)"] = done.output.encode()
        for fmt in ("text", "md", "json", "html", "junit"):
            shown = dr(config, "report", "--format", fmt)
            assert 0 == shown.exit_code, shown.output
            outputs[f"dr report --format {fmt}"] = shown.output.encode()
        known = set(secret.registered())
        for value in (token, *shares, *canaries, webhook):
            known |= spellings(value)
        assert len(known) > 40  # shares, tokens, JWTs, canaries: the scan has something to find
        files = {
            str(p): p.read_bytes()
            for base in (state, reports, tmp_path / "store")
            for p in base.rglob("*")
            if p.is_file() and keys not in p.parents and (root / "target" / "sandbox") not in p.parents
        }
        assert any(p.endswith("history.sqlite") for p in files)
        assert any(p.endswith("checkpoint.json") for p in files)
        assert [] == leaks(known, {**outputs, **files, **argv_of_every_process()})
        # Modes: state dirs owner-only, checkpoints and key files 0600.
        for directory in (state, state / "drills", root, root / "source", root / "target", root / "target" / "runs"):
            assert 0o700 == stat.S_IMODE(directory.stat().st_mode), directory
        for path in [*keys.iterdir(), *(root / "target" / "runs").rglob("checkpoint.json"), state / "history.sqlite"]:
            assert 0o600 == stat.S_IMODE(path.stat().st_mode), path
    finally:
        CliRunner().invoke(cli.cli, ["drill", "cleanup", "--state-dir", str(state)])
