"""The image `make image` builds (image/build.py): reproducible, small in what it holds, and running as the CronJob.

The image's root filesystem is unpacked and its entry point run in it as the
CronJob's pod would run it: a private mount namespace, the root read-only,
`/tmp` a fresh tmpfs, the ConfigMap, the projected ServiceAccount token and
the store's volume bound in, user and group 65532, the image's environment
only. It logs in to a real OpenBao with Kubernetes auth, OpenBao reviewing
the token with the real kube-apiserver, and saves to a file store and to S3.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hvac
import kubernetes
import pytest
import yaml
from click.testing import CliRunner

from dr import __version__, cli, secret
from dr.sandbox import backends
from tests.harness_s3 import S3Server
from tests.harness_vault import Original, remember
from tests.polling import eventually

BUILD = Path(__file__).resolve().parents[2] / "image" / "build.py"
TOKEN_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
USER = 65532

pytestmark = pytest.mark.skipif(
    shutil.which("mmdebstrap") is None or os.geteuid() != 0,
    reason="make image needs root and mmdebstrap (make test installs the Debian package mmdebstrap)",
)


@dataclass(frozen=True)
class Image:
    out: Path
    digest: str
    config: dict[str, Any]
    rootfs: Path
    members: frozenset[str]


def build(out: Path, *args: str, env: dict[str, str] | None = None) -> str:
    argv = [sys.executable, str(BUILD), "--out", str(out), *args]
    done = subprocess.run(argv, capture_output=True, text=True, check=False, env=env)
    assert 0 == done.returncode, done.stdout + done.stderr
    return (out / "digest").read_text().strip()


def failed_build(out: Path, *args: str, env: dict[str, str] | None = None) -> str:
    argv = [sys.executable, str(BUILD), "--out", str(out), *args]
    done = subprocess.run(argv, capture_output=True, text=True, check=False, env=env)
    assert 1 == done.returncode, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    return done.stderr


def blob(layout: Path, digest: str) -> Path:
    return layout / "blobs" / "sha256" / digest.removeprefix("sha256:")


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Image:
    out = tmp_path_factory.mktemp("image") / "out"
    digest = build(out)
    layout = out / "oci"
    index = json.loads((layout / "index.json").read_text())
    assert digest == index["manifests"][0]["digest"]
    manifest = json.loads(blob(layout, digest).read_bytes())
    config = json.loads(blob(layout, manifest["config"]["digest"]).read_bytes())
    rootfs = out.parent / "rootfs"
    with tarfile.open(blob(layout, manifest["layers"][0]["digest"]), "r:gz") as layer:
        members = frozenset(layer.getnames())
        layer.extractall(rootfs, filter="tar")
    return Image(out, digest, config, rootfs, members)


def test_two_builds_give_one_digest_and_the_image_holds_python_and_dr_only(image: Image, tmp_path: Path) -> None:
    """The same commit and Debian mirror state give the same digest; no shell, no bao, no compiler; user 65532;
    the package listing names every Debian package and Python distribution with its licence."""
    assert image.digest == build(tmp_path / "again")
    assert (image.out / f"dr-{__version__}.oci.tar").read_bytes() == (
        tmp_path / "again" / f"dr-{__version__}.oci.tar"
    ).read_bytes()

    for absent in ("usr/bin/sh", "usr/bin/bash", "usr/bin/dash", "usr/bin/bao", "usr/bin/gcc", "usr/bin/cc"):
        assert absent not in image.members
    programs = {n.rsplit("/", 1)[-1] for n in image.members if n.startswith(("usr/bin/", "usr/sbin/"))}
    assert not programs & {"bao", "apt", "apt-get", "sh", "bash", "dash", "gcc", "cc", "ld"}, sorted(programs)
    assert "var/lib/dpkg/status.d/python3.11-minimal" in image.members  # what a vulnerability scanner reads
    run = image.config["config"]
    assert (f"{USER}:{USER}", ["/usr/bin/python3.11", "-m", "dr"]) == (run["User"], run["Entrypoint"])
    assert "nonroot:x:65532:65532" in (image.rootfs / "etc" / "passwd").read_text()

    listing = (image.out / "packages.txt").read_text()
    assert listing == (image.rootfs / "usr/share/doc/dr/packages.txt").read_text()
    assert "python3.11-minimal 3.11." in listing
    assert "\nboto3 " in listing
    assert f"dr {__version__} Apache-2.0" in listing
    assert "openbao" not in listing.lower()


def test_a_build_that_fails_leaves_the_image_that_was_there_and_nothing_half_written(image: Image) -> None:
    """A missing tool names its Debian package; a build that fails halfway (the Debian mirror unreachable, after
    the checks) keeps the previous image whole and leaves no partial directory beside it."""
    before = sorted(p.relative_to(image.out) for p in image.out.rglob("*"))
    digest = (image.out / "digest").read_text()
    no_tools = {**os.environ, "PATH": str(Path(sys.executable).parent)}
    assert "install the Debian package mmdebstrap" in failed_build(image.out, env=no_tools)
    assert "mmdebstrap failed" in failed_build(image.out, "--mirror", "http://127.0.0.1:9/debian")
    assert before == sorted(p.relative_to(image.out) for p in image.out.rglob("*"))
    assert digest == (image.out / "digest").read_text()
    assert [image.out.name, "rootfs"] == sorted(p.name for p in image.out.parent.iterdir())


def run_in_image(
    image: Image, args: list[str], *, env: dict[str, str], binds: dict[str, Path]
) -> subprocess.CompletedProcess[str]:
    """The entry point with `args`, as a pod runs it: read-only root, tmpfs /tmp, `binds` at their paths, 65532."""
    root = image.rootfs
    lines = ["set -e", "mount --make-rprivate /", f"mount --bind {root} {root}"]
    for inside, source in binds.items():
        target = root / inside.lstrip("/")
        target.mkdir(parents=True, exist_ok=True)  # the mount point, as a runtime makes it in the container's root
        lines.append(f"mount --bind {shlex.quote(str(source))} {shlex.quote(str(target))}")
    lines.append(f"mount -o remount,bind,ro {root}")
    lines.append(f"mount -t tmpfs -o mode=1777 tmpfs {root}/tmp")
    entry = [*image.config["config"]["Entrypoint"], *args]
    lines.append(f"exec unshare --root={root} --wd=/tmp --setuid={USER} --setgid={USER} -- {shlex.join(entry)}")
    image_env = dict(item.split("=", 1) for item in image.config["config"]["Env"])
    return subprocess.run(
        ["unshare", "--mount", "--fork", "--", "sh", "-c", "\n".join(lines)],
        env={**image_env, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def service_account_token(
    real_api: backends.Real, original: Original, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A projected-style token of vault-admin/dr-snapshot, and Kubernetes auth in OpenBao that reviews it."""
    kubeconfig = tmp_path_factory.mktemp("kube") / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(real_api.kubeconfig))
    client = kubernetes.config.new_client_from_config(str(kubeconfig))
    core = kubernetes.client.CoreV1Api(client)
    core.create_namespace({"metadata": {"name": "vault-admin"}})
    core.create_namespaced_service_account("vault-admin", {"metadata": {"name": "dr-snapshot"}})
    kubernetes.client.RbacAuthorizationV1Api(client).create_cluster_role_binding(
        {
            "metadata": {"name": "dr-snapshot-tokenreview"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "system:auth-delegator",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "dr-snapshot", "namespace": "vault-admin"}],
        }
    )
    issued = core.create_namespaced_service_account_token(
        "dr-snapshot", "vault-admin", {"spec": {"expirationSeconds": 3600}}
    )
    remember(secret.Secret(issued.status.token))
    admin = hvac.Client(url=original.procs.addresses[0], token=original.token.reveal())
    admin.sys.enable_auth_method("kubernetes", path="image-k8s")
    admin.write_data(
        "auth/image-k8s/config",
        data={"kubernetes_host": real_api.url, "kubernetes_ca_cert": real_api.ca.pem, "disable_local_ca_jwt": True},
    )
    admin.sys.create_or_update_policy("image-snapshot", 'path "sys/storage/raft/snapshot" { capabilities = ["read"] }')
    admin.write_data(
        "auth/image-k8s/role/dr-snapshot",
        data={
            "bound_service_account_names": ["dr-snapshot"],
            "bound_service_account_namespaces": ["vault-admin"],
            "token_policies": ["image-snapshot"],
            "token_ttl": "15m",
        },
    )
    projected = tmp_path_factory.mktemp("serviceaccount")
    projected.chmod(0o755)
    (projected / "token").write_text(issued.status.token)
    os.chown(projected / "token", 0, USER)  # as the kubelet leaves it under fsGroup 65532
    (projected / "token").chmod(0o640)
    return projected


def save_in_image(
    image: Image, original: Original, projected: Path, tmp_path: Path, snapshots: dict[str, Any], env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "config"
    config.mkdir()
    (config / "dr.yaml").write_text(
        yaml.safe_dump(
            {
                "cluster": {"name": "prod"},
                "vault": {
                    "addresses": original.procs.addresses,
                    "auth": {"method": "kubernetes", "role": "dr-snapshot", "mount": "image-k8s"},
                },
                "snapshots": snapshots,
            }
        )
    )
    data = tmp_path / "data"
    data.mkdir()
    os.chown(data, USER, USER)  # the claim's directory, under fsGroup 65532

    def login_works() -> subprocess.CompletedProcess[str] | None:
        done = run_in_image(
            image,
            ["snapshot", "save", "--prune"],
            env={"DR_CONFIG": "/etc/dr/dr.yaml", "DR_STATE_DIR": "/tmp/dr", **env},
            binds={"/etc/dr": config, TOKEN_DIR: projected, "/var/lib/dr": data},
        )
        # The API server's RBAC cache learns of the auth-delegator binding a moment after it is made.
        return None if "permission denied" in done.stderr else done

    return eventually(login_works, "a save once OpenBao's TokenReview is authorised", timeout=30, interval=1)


def test_the_image_saves_to_a_file_store_as_the_cronjob_does(
    image: Image, original: Original, service_account_token: Path, tmp_path: Path
) -> None:
    done = save_in_image(
        image, original, service_account_token, tmp_path, {"store": "file:///var/lib/dr/snapshots"}, {}
    )
    assert 0 == done.returncode, done.stdout + done.stderr
    assert "saved " in done.stdout
    assert service_account_token.joinpath("token").read_text() not in done.stdout + done.stderr
    store = tmp_path / "data" / "snapshots"
    assert {USER} == {p.stat().st_uid for p in (store / "prod").iterdir()}  # written by the pod's user
    verified = CliRunner().invoke(cli.cli, ["snapshot", "verify", "latest", "--store", str(store), "--cluster", "prod"])
    assert 0 == verified.exit_code, verified.output


def test_the_image_saves_to_s3_as_the_cronjob_does(
    image: Image, original: Original, service_account_token: Path, tmp_path: Path, s3_server: S3Server, s3_env: str
) -> None:
    import boto3

    boto3.client("s3", endpoint_url=s3_env).create_bucket(Bucket="image-nightly")
    snapshots = {"store": "s3://image-nightly/vault", "s3_endpoint": s3_env}
    done = save_in_image(image, original, service_account_token, tmp_path, snapshots, s3_server.env())
    assert 0 == done.returncode, done.stdout + done.stderr
    where = ["--cluster", "prod", "--store", "s3://image-nightly/vault", "--s3-endpoint", s3_env]
    listed = CliRunner().invoke(cli.cli, ["snapshot", "list", "-o", "json", *where])
    assert 0 == listed.exit_code, listed.output
    assert 1 == len(json.loads(listed.stdout)["snapshots"])
