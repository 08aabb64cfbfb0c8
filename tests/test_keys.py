"""Key sources: files, environment, prompt, stdin, and AWS Secrets Manager / SSM through moto's server."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import boto3
import pytest

from dr import errors, secret
from dr.adapters import keys

SHARES = ["c2hhcmUtb25lLWJhc2U2NA==", "c2hhcmUtdHdvLWJhc2U2NA==", "c2hhcmUtdGhyZWUtYjY0"]


def reveal(shares: list[keys.secret.Secret]) -> list[str]:
    return [s.reveal() for s in shares]


def write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def test_files_one_share_each(tmp_path: Path) -> None:
    """Each 0600 file gives one share, in the order given; a token file gives the DR token."""
    paths = [write(tmp_path / f"s{i}", f"{s}\n") for i, s in enumerate(SHARES)]
    source = keys.FileKeys(paths, write(tmp_path / "token", "s.dr-token-value\n"))
    assert SHARES == reveal(source.shares())
    token = source.token()
    assert token is not None
    assert "s.dr-token-value" == token.reveal()


@pytest.mark.parametrize(
    ("content", "mode", "message"),
    [
        ("x" * 20, 0o644, "readable by group or others (mode 0644)"),
        ("x" * 20, 0o640, "readable by group or others (mode 0640)"),
        ("\n\n", 0o600, "is empty"),
        ("a" * 10 + "\n" + "b" * 10, 0o600, "has 2 lines"),
    ],
)
def test_bad_key_files_are_refused(tmp_path: Path, content: str, mode: int, message: str) -> None:
    """Readable-by-others, empty and multi-share files are ConfigErrors (exit 2) naming the file."""
    path = write(tmp_path / "share", content, mode)
    with pytest.raises(errors.ConfigError, match=re.escape(message)) as info:
        keys.FileKeys([path]).shares()
    assert str(path) in str(info.value)
    assert 2 == info.value.exit_code


def test_missing_key_file_is_named(tmp_path: Path) -> None:
    """A key file that does not exist is a ConfigError naming it."""
    with pytest.raises(errors.ConfigError, match="does not exist"):
        keys.FileKeys([tmp_path / "nope"]).shares()


def test_environment_shares_are_ordered_by_number() -> None:
    """DR_UNSEAL_KEY_<n> are read in numeric order (10 after 2); the token from DR_VAULT_TOKEN."""
    env = {
        "DR_UNSEAL_KEY_10": "tenth-share",
        "DR_UNSEAL_KEY_2": "second-share",
        "DR_UNSEAL_KEY_1": "first-share",
        "DR_UNSEAL_KEY_X": "ignored",
        "DR_VAULT_TOKEN": "s.token-value",
    }
    source = keys.EnvKeys(environ=env)
    assert ["first-share", "second-share", "tenth-share"] == reveal(source.shares())
    assert "s.token-value" == source.token().reveal()  # type: ignore[union-attr]
    with pytest.raises(errors.ConfigError, match="no DR_UNSEAL_KEY_<n> environment variables"):
        keys.EnvKeys(environ={}).shares()


def test_prompt_asks_each_custodian_in_turn_without_the_share_in_the_prompt() -> None:
    """Custodians are asked in order, once per run; prompts name them and never contain a share."""
    asked: list[str] = []
    answers = iter([*SHARES, "s.dr-token"])

    def ask(prompt: str) -> str:
        asked.append(prompt)
        return next(answers)

    source = keys.PromptKeys(["alice", "bob", "carol"], ask_token=True, ask=ask)
    assert SHARES == reveal(source.shares())
    assert SHARES == reveal(source.shares())  # asked once, remembered for every node
    assert "s.dr-token" == source.token().reveal()  # type: ignore[union-attr]
    assert ["alice (1 of 3)", "bob (2 of 3)", "carol (3 of 3)"] == [p.split(",")[0] for p in asked[:3]]
    assert all(s not in p for s in SHARES for p in asked)
    assert 4 == len(asked)


def test_prompt_with_an_empty_answer_stops() -> None:
    """A custodian who just presses Enter stops the prompt with a clear error."""
    answers = iter(["share-a-value", ""])
    source = keys.PromptKeys(["alice", "bob"], ask=lambda _: next(answers))
    with pytest.raises(errors.ConfigError, match="bob entered no share"):
        source.shares()


def test_stdin_reads_one_share_per_line_and_a_token_line() -> None:
    """Blank and # lines are skipped; `token:` gives the token."""
    stream = io.StringIO("# from the vault of secrets\n" + "\n".join(SHARES) + "\n\ntoken: s.piped-token\n")
    source = keys.StdinKeys(stream)
    assert SHARES == reveal(source.shares())
    assert "s.piped-token" == source.token().reveal()  # type: ignore[union-attr]
    with pytest.raises(errors.ConfigError, match="no shares on standard input"):
        keys.StdinKeys(io.StringIO("")).shares()


def test_secrets_manager_source(aws_env: str) -> None:
    """A Secrets Manager secret with {"shares", "token"} or bao's init JSON gives shares and token."""
    client = boto3.client("secretsmanager", endpoint_url=aws_env)
    client.create_secret(Name="dr/unseal", SecretString=json.dumps({"shares": SHARES, "token": "s.sm-token"}))
    client.create_secret(Name="dr/init", SecretString=json.dumps({"unseal_keys_b64": SHARES[:2], "root_token": "s.r"}))
    source = keys.SecretsManagerKeys("dr/unseal", endpoint_url=aws_env)
    assert SHARES == reveal(source.shares())
    assert "s.sm-token" == source.token().reveal()  # type: ignore[union-attr]
    assert SHARES[:2] == reveal(keys.SecretsManagerKeys("dr/init", endpoint_url=aws_env).shares())


def test_secrets_manager_errors_are_clear(aws_env: str) -> None:
    """A missing secret names it; a non-JSON secret says what to store."""
    with pytest.raises(errors.PermanentError, match="ResourceNotFoundException"):
        keys.SecretsManagerKeys("dr/absent", endpoint_url=aws_env).shares()
    boto3.client("secretsmanager", endpoint_url=aws_env).create_secret(Name="dr/plain", SecretString="not json")
    with pytest.raises(errors.ConfigError, match="is not a JSON object"):
        keys.SecretsManagerKeys("dr/plain", endpoint_url=aws_env).shares()


def test_ssm_source_reads_secure_strings_under_a_path(aws_env: str) -> None:
    """SecureStrings under a path are shares in name order (share-10 after share-2); `token` is the token."""
    ssm = boto3.client("ssm", endpoint_url=aws_env)
    names = ["share-1", "share-2", "share-10"]
    for name, value in zip(names, SHARES, strict=True):
        ssm.put_parameter(Name=f"/dr/unseal/{name}", Value=value, Type="SecureString")
    ssm.put_parameter(Name="/dr/unseal/token", Value="s.ssm-token", Type="SecureString")
    source = keys.SsmKeys("/dr/unseal", endpoint_url=aws_env)
    assert SHARES == reveal(source.shares())
    assert "s.ssm-token" == source.token().reveal()  # type: ignore[union-attr]
    with pytest.raises(errors.ConfigError, match="no SSM parameters under /dr/empty"):
        keys.SsmKeys("/dr/empty", endpoint_url=aws_env).shares()


def test_aws_without_credentials_is_a_config_error(
    aws_env: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """No credentials anywhere in the chain: exit 2 with what to provide."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(errors.ConfigError, match="no AWS credentials"):
        keys.SecretsManagerKeys("dr/unseal", endpoint_url=aws_env).shares()


# -- key sinks (dr bootstrap) -----------------------------------------------------------------


def test_file_sink_writes_private_files_that_the_file_source_reads_back(tmp_path: Path) -> None:
    sink = keys.FileSink(tmp_path / "keys")
    shares = [secret.Secret(s) for s in SHARES]
    where = sink.save(shares, secret.Secret("root-tok"), encrypted=False)
    assert str(tmp_path / "keys") in where
    assert "root-tok" not in where
    assert 0o700 == (tmp_path / "keys").stat().st_mode & 0o777
    assert {0o600} == {p.stat().st_mode & 0o777 for p in (tmp_path / "keys").iterdir()}
    source = sink.source()
    assert source is not None
    assert SHARES == reveal(source.shares())
    token = source.token()
    assert token is not None
    assert "root-tok" == token.reveal()
    assert keys.FileSink(tmp_path / "empty").source() is None


def test_secrets_manager_sink_round_trips_through_the_secrets_manager_source(aws_env: str) -> None:
    sink = keys.SecretsManagerSink("dr/bootstrap-keys", endpoint_url=aws_env)
    sink.save([secret.Secret(s) for s in SHARES], secret.Secret("root-tok"), encrypted=False)
    again = [secret.Secret(s) for s in reversed(SHARES)]
    sink.save(again, secret.Secret("root-tok-2"), encrypted=False)  # an existing secret gets a new version
    source = sink.source()
    assert source is not None
    assert list(reversed(SHARES)) == reveal(source.shares())
    token = source.token()
    assert token is not None
    assert "root-tok-2" == token.reveal()


def test_print_sink_refuses_plaintext_and_prints_encrypted_shares_once() -> None:
    lines: list[str] = []
    sink = keys.PrintSink(lines.append)
    with pytest.raises(errors.PermanentError, match="refusing to print unencrypted shares"):
        sink.save([secret.Secret("plain")], secret.Secret("t"), encrypted=False)
    assert [] == lines
    sink.save([secret.Secret("wcBMA-1"), secret.Secret("wcBMA-2")], secret.Secret("wcBMA-t"), encrypted=True)
    assert ["share 1 (PGP-encrypted, base64): wcBMA-1", "share 2 (PGP-encrypted, base64): wcBMA-2"] == lines[:2]
    assert lines[2].endswith("wcBMA-t")
    assert sink.source() is None
