"""Build the OCI image of `dr` that the nightly snapshot CronJob runs, without a container engine (`make image`).

No machine of this project has Docker, so the image is made from Debian's and
PyPI's packages directly: mmdebstrap extracts a Debian root with Python 3.11
and only the libraries it links (no shell, no package manager's scripts run,
no compilers), uv installs dr's wheel and its locked runtime dependencies
into /opt/dr/lib, and this script writes the OCI image layout and an
`oci-archive` tarball itself. Writing the tar and the JSON here, rather than
through umoci or skopeo, is what makes the build reproducible: entries sorted,
owned by root, every mtime SOURCE_DATE_EPOCH (the commit's time), gzip without
a timestamp, so two builds of one commit and one Debian mirror state give the
same digest. The `bao` binary is not in the image: the job talks to Vault over
HTTPS.

    python image/build.py [--out dist/image]

Writes, atomically (a failed build leaves the previous image or none):
`dr-VERSION.oci.tar` (the oci-archive), `oci/` (the same as a layout),
`digest` (sha256:… of the manifest) and `packages.txt` (every Debian package
and Python distribution in the image, with versions and licences; also at
/usr/share/doc/dr/packages.txt inside). Needs root (mmdebstrap's root mode
and a chroot to compile the bytecode).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
DEBIAN = ("python3.11-minimal", "libpython3.11-stdlib")
PYTHON = "/usr/bin/python3.11"
USER = 65532
NAME = "ghcr.io/dr-project/dr"
TOOLS = {"mmdebstrap": "mmdebstrap", "dpkg-deb": "dpkg", "chroot": "coreutils"}  # tool: its Debian package
MEDIA = "application/vnd.oci.image"
EXAMPLE = ROOT / "examples" / "platform" / "infrastructure" / "platform" / "vault" / "snapshots"


class BuildError(Exception):
    """What stopped the build, said so that the operator knows what to do."""


def version() -> str:
    text = (ROOT / "dr" / "__init__.py").read_text()
    return text.split('__version__ = "', 1)[1].split('"', 1)[0]


# What goes into the image: a commit that changes none of these (the example's pinned digest, a test) keeps the
# image's timestamps, and so its digest.
INPUTS = ("dr", "pyproject.toml", "uv.lock", "image", "README.md")


def epoch() -> int:
    """SOURCE_DATE_EPOCH if set, else the time of the last commit that changed what goes into the image."""
    if "SOURCE_DATE_EPOCH" in os.environ:
        return int(os.environ["SOURCE_DATE_EPOCH"])
    argv = ["git", "log", "-1", "--format=%ct", "--", *INPUTS]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0 or not done.stdout.strip():
        raise BuildError("cannot read the commit time (no git history here): set SOURCE_DATE_EPOCH")
    return int(done.stdout.strip())


def check_tools() -> Path:
    for tool, package in TOOLS.items():
        if shutil.which(tool) is None:
            raise BuildError(f"{tool} is missing: install the Debian package {package} (apt-get install {package})")
    if os.geteuid() != 0:
        raise BuildError("make image needs root (mmdebstrap --mode=root, chroot); or build image/Containerfile")
    uv = ROOT / ".tools" / "bin" / "uv"
    if not uv.exists():
        raise BuildError(f"{uv} is missing: run make install first")
    return uv


def run(argv: list[str], **kwargs: Any) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)
    if done.returncode != 0:
        raise BuildError(f"{argv[0]} failed ({done.returncode}): {(done.stderr or done.stdout)[-3000:]}")
    return done.stdout


def debian_root(rootfs: Path, stamp: int, mirror: str) -> list[str]:
    """Extract the Debian packages (and their dependencies) into `rootfs`; their `name version arch` lines."""
    listing = rootfs.parent / "debs.txt"
    # Each package's control fields go to /var/lib/dpkg/status.d/ (as distroless images do): nothing is installed
    # through dpkg, so this is how vulnerability scanners (Trivy, Grype) learn what the image holds.
    hook = (
        'mkdir -p "$1/var/lib/dpkg/status.d"; for d in "$1"/var/cache/apt/archives/*.deb; do '
        'dpkg-deb -f "$d" > "$1/var/lib/dpkg/status.d/$(dpkg-deb -f "$d" Package)"; dpkg-deb --show '
        f"--showformat='${{Package}} ${{Version}} ${{Architecture}}\\n' \"$d\"; done > {listing}"
    )
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(stamp)}
    run(
        [
            *("mmdebstrap", "--quiet", "--variant=extract", f"--include={','.join(DEBIAN)}", "--mode=root"),
            *(f"--extract-hook={hook}", SUITE, str(rootfs), mirror),
        ],
        env=env,
    )
    return sorted(listing.read_text().splitlines())


def python_packages(rootfs: Path, uv: Path, work: Path, stamp: int) -> list[str]:
    """dr's wheel and its locked runtime dependencies in /opt/dr/lib, bytecode compiled by the image's Python."""
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(stamp), "UV_PYTHON": sys.executable}
    run([str(uv), "build", "--wheel", "--quiet", "--out-dir", str(work / "dist")], cwd=ROOT, env=env)
    requirements = work / "requirements.txt"
    exported = run(
        [str(uv), "export", "--frozen", "--no-dev", "--no-emit-project", "--no-hashes", "--quiet"], cwd=ROOT, env=env
    )
    requirements.write_text(exported)
    target = rootfs / "opt" / "dr" / "lib"
    wheel = next((work / "dist").glob("dr-*.whl"))
    run(
        [
            *(str(uv), "pip", "install", "--quiet", "--no-deps", "--link-mode=copy", "--target", str(target)),
            *("--python-platform", "x86_64-manylinux_2_36", "--python-version", "3.11"),
            *("-r", str(requirements), str(wheel)),
        ],
        cwd=ROOT,
        env=env,
    )
    shutil.rmtree(target / "bin", ignore_errors=True)  # console scripts with the builder's interpreter path
    for info in target.glob("*.dist-info"):
        forget_the_builder(info)
    # Hash-based .pyc files carry no mtime: reproducible, and valid on a read-only root that can write none.
    for tree in ("/opt/dr/lib", "/usr/lib/python3.11"):
        run(
            ["chroot", str(rootfs), PYTHON, "-m", "compileall", "-q", "-j0", "--invalidation-mode=unchecked-hash", tree]
        )
    found = metadata.distributions(path=[str(target)])
    return sorted(f"{d.metadata['Name']} {d.version} {licence(d)}" for d in found)


def forget_the_builder(info: Path) -> None:
    """Drop what an install records about the machine that made it: the console scripts (removed; they name the
    builder's interpreter), and for a local wheel its temporary path and uv's timestamp."""
    dropped = ("direct_url.json", "uv_cache.json")
    for name in dropped:
        (info / name).unlink(missing_ok=True)
    record = info / "RECORD"
    kept = [
        line
        for line in record.read_text().splitlines()
        if not line.startswith("bin/") and line.split(",")[0].rsplit("/", 1)[-1] not in dropped
    ]
    record.write_text("\n".join(kept) + "\n")


def licence(dist: metadata.Distribution) -> str:
    expression = dist.metadata.get("License-Expression")
    if expression:
        return expression
    classifiers = [c.split(" :: ")[-1] for c in dist.metadata.get_all("Classifier") or [] if c.startswith("License")]
    short = (dist.metadata.get("License") or "").splitlines()[0:1]
    return "; ".join(classifiers) or (short[0][:60] if short else "UNKNOWN")


def users(rootfs: Path) -> None:
    etc = rootfs / "etc"
    (etc / "passwd").write_text(f"root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:{USER}:{USER}::/tmp:/sbin/nologin\n")
    (etc / "group").write_text(f"root:x:0:\nnonroot:x:{USER}:\n")


def layer(rootfs: Path, stamp: int) -> tuple[bytes, str]:
    """The root filesystem as one gzipped tar layer, byte for byte the same for the same tree; (blob, diff_id)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(rootfs.rglob("*"), key=lambda p: p.relative_to(rootfs).as_posix()):
            info = tar.gettarinfo(str(path), arcname=path.relative_to(rootfs).as_posix())
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = min(int(info.mtime), stamp)
            info.pax_headers = {}
            if info.isreg():
                with path.open("rb") as handle:
                    tar.addfile(info, handle)
            else:
                tar.addfile(info)
    data = raw.getvalue()
    packed = io.BytesIO()
    with gzip.GzipFile(fileobj=packed, mode="wb", mtime=0, compresslevel=6) as gz:
        gz.write(data)
    return packed.getvalue(), f"sha256:{hashlib.sha256(data).hexdigest()}"


def blob(layout: Path, data: bytes, media_type: str) -> dict[str, Any]:
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    (layout / "blobs" / "sha256" / digest).write_bytes(data)
    return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data)}


def canonical(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def oci_layout(layout: Path, rootfs: Path, stamp: int, tag: str) -> str:
    """Write the image layout; returns the manifest's digest (the image's)."""
    created = datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    gz, diff_id = layer(rootfs, stamp)
    labels = {
        "org.opencontainers.image.title": "dr",
        "org.opencontainers.image.version": tag,
        "org.opencontainers.image.licenses": "Apache-2.0",
        "org.opencontainers.image.created": created,
        "org.opencontainers.image.source": "https://github.com/dr-project/dr",
        "dev.dr.packages": "/usr/share/doc/dr/packages.txt",
    }
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": created,
        "config": {
            "User": f"{USER}:{USER}",
            "Entrypoint": [PYTHON, "-m", "dr"],
            "Env": [
                "PATH=/usr/bin",
                "PYTHONPATH=/opt/dr/lib",
                "PYTHONDONTWRITEBYTECODE=1",  # the root is read-only; the bytecode was compiled at build
                "PYTHONUNBUFFERED=1",
                "HOME=/tmp",
            ],
            "WorkingDir": "/tmp",  # noqa: S108 - the container's own /tmp, the one writable path
            "Labels": labels,
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": created, "created_by": "make image (image/build.py)"}],
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": f"{MEDIA}.manifest.v1+json",
        "config": blob(layout, canonical(config), f"{MEDIA}.config.v1+json"),
        "layers": [blob(layout, gz, f"{MEDIA}.layer.v1.tar+gzip")],
        "annotations": {k: v for k, v in labels.items() if k.startswith("org.opencontainers")},
    }
    described = blob(layout, canonical(manifest), f"{MEDIA}.manifest.v1+json")
    described["annotations"] = {"org.opencontainers.image.ref.name": tag}
    index = {"schemaVersion": 2, "mediaType": f"{MEDIA}.index.v1+json", "manifests": [described]}
    (layout / "index.json").write_bytes(canonical(index))
    (layout / "oci-layout").write_bytes(canonical({"imageLayoutVersion": "1.0.0"}))
    return str(described["digest"])


def archive(layout: Path, target: Path, stamp: int) -> None:
    """The layout as an `oci-archive` tarball (what `skopeo copy oci-archive:…` and `podman load` read)."""
    with tarfile.open(target, "w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(layout.rglob("*"), key=lambda p: p.relative_to(layout).as_posix()):
            info = tar.gettarinfo(str(path), arcname=path.relative_to(layout).as_posix())
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = stamp
            info.mode = 0o644 if info.isreg() else 0o755
            if info.isreg():
                with path.open("rb") as handle:
                    tar.addfile(info, handle)
            else:
                tar.addfile(info)


def build(out: Path, mirror: str = MIRROR, *, keep_rootfs: bool = False) -> str:
    uv = check_tools()
    stamp, tag = epoch(), version()
    started = time.monotonic()
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".image-", dir=out.parent))  # beside `out`: the final rename is atomic
    try:
        rootfs = work / "rootfs"
        debs = debian_root(rootfs, stamp, mirror)
        wheels = python_packages(rootfs, uv, work, stamp)
        users(rootfs)
        listing = "# Debian packages (licences: /usr/share/doc/PACKAGE/copyright)\n" + "\n".join(debs)
        listing += "\n\n# Python distributions (name version licence)\n" + "\n".join(wheels) + "\n"
        docs = rootfs / "usr" / "share" / "doc" / "dr"
        docs.mkdir(parents=True, exist_ok=True)
        (docs / "packages.txt").write_text(listing)
        for leftover in ("var/cache/apt", "var/lib/apt", "var/log", "etc/apt"):
            shutil.rmtree(rootfs / leftover, ignore_errors=True)
        (rootfs / "tmp").mkdir(exist_ok=True)
        result = work / "result"
        result.mkdir()
        digest = oci_layout(result / "oci", rootfs, stamp, tag)
        archive(result / "oci", result / f"dr-{tag}.oci.tar", stamp)
        (result / "digest").write_text(digest + "\n")
        (result / "packages.txt").write_text(listing)
        if keep_rootfs:  # for image/Containerfile, which copies it into a `FROM scratch` stage
            rootfs.rename(result / "rootfs")
        shutil.rmtree(out, ignore_errors=True)
        result.rename(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    size = (out / f"dr-{tag}.oci.tar").stat().st_size
    took = time.monotonic() - started
    print(f"image {NAME}:{tag}@{digest}\n  {out}/dr-{tag}.oci.tar, {size / 1e6:.1f} MB, in {took:.0f} s")
    return digest


def pin_example(reference: str) -> Path:
    """Point the example platform's CronJob at the image just built, by digest (what `dr snapshot schedule
    --image` renders; the schedule test checks the rest of the file is unchanged output)."""
    cronjob = EXAMPLE / "cronjob.yaml"
    lines = cronjob.read_text().splitlines(keepends=True)
    pinned = [
        f"{ln.split('image:')[0]}image: {reference}\n" if ln.strip().startswith(f"image: {NAME}") else ln
        for ln in lines
    ]
    cronjob.write_text("".join(pinned))
    return cronjob


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "dist" / "image")
    parser.add_argument("--pin-example", action="store_true", help="pin examples/platform's CronJob to the digest")
    parser.add_argument("--keep-rootfs", action="store_true", help="also keep the root filesystem as OUT/rootfs")
    parser.add_argument("--mirror", default=MIRROR, help=f"the Debian mirror (a local one where offline) [{MIRROR}]")
    args = parser.parse_args()
    try:
        digest = build(args.out.resolve(), args.mirror, keep_rootfs=args.keep_rootfs)
    except BuildError as exc:
        raise SystemExit(f"make image: {exc}") from None
    if args.pin_example:
        print(f"  pinned in {pin_example(f'{NAME}:{version()}@{digest}').relative_to(ROOT)}")


if __name__ == "__main__":
    main()
