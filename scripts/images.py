"""Builds the modelroute images without a Docker daemon or an image registry: `scripts/images`.

1. A base root filesystem from Debian's packages: `mmdebstrap --variant=extract` of Debian trixie's
   `python3` (CPython 3.13, the project's floor is 3.12) with its library closure, CA certificates and
   netbase; no shell, no package manager database, no pip. The standard library is byte-compiled once
   (a read-only root filesystem cannot cache bytecode at run time). Cached as a tar keyed by the
   suite, the package list and this recipe's revision.
2. One wheel of our sources. Each image installs `<wheel>[sidecar]` or `<wheel>[operator]` with pip
   `--target` for the base's interpreter and glibc (wheels only), so what lands in an image is exactly
   what pyproject's extra names; nothing is listed here.
3. buildah: a base image from the root filesystem (one layer both images share) and one layer per
   image with the installed packages, bytecode, entry-point scripts, UID/GID 65532, and the
   entrypoint. Written as OCI archives `modelroute-<image>-<version>-<key>.oci.tar`, keyed by the
   wheel's content, under `~/.cache/modelroute/images` (MODELROUTE_CACHE). Nothing is rebuilt when
   the key exists.
4. A smoke run of each archive with runc, as the image says (UID 65532) and with a read-only root
   filesystem and a tmpfs /tmp as the chart runs it: the sidecar until its admin `/healthz` answers,
   the operator's `--help` (interpreter plus every import). The seconds from `runc run` to that are the
   cold-start figures printed with the sizes.

`scripts/images demo-app` also builds the demo's application image (not built by default): the same
base with the official `openai` SDK (the version of this venv) and `scripts/demo_app.py`, so the demo
on a real cluster sends its traffic from an application pod, through the injected sidecar.

Writes `.local/images.json` (image → reference, archive, sizes, cold start) for `scripts/cluster` and the
tests. Standard library only (runs from the project's venv for pip).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("MODELROUTE_CACHE", Path.home() / ".cache" / "modelroute"))
IMAGES = CACHE / "images"
INDEX = REPO / ".local" / "images.json"
if str(REPO) not in sys.path:  # run as a script: only scripts/ itself is on sys.path
    sys.path.insert(0, str(REPO))
from tests.ports import free_port  # noqa: E402  (standard library only)

SUITE = os.environ.get("MODELROUTE_BASE_SUITE", "trixie")
SUITE_PYTHON = {"trixie": "3.13"}
"""The CPython each supported suite ships (bookworm's 3.11 is below the project's floor). The Dockerfiles
use the same minor version, and the rootfs build fails if the suite ships another."""
BASE_PACKAGES = ["python3", "libstdc++6", "ca-certificates", "netbase"]
"""libstdc++6: manylinux wheels (google-re2) link it from the system, as the manylinux spec allows."""
BASE_RECIPE = 1
"""Bump when the root filesystem recipe changes (the cache key includes it)."""
IMAGE_RECIPE = 2
"""Bump when the image layer recipe changes."""
# r2: the sidecar image drops botocore's service models and numpy's test suites (`Image.prune`)
UID = 65532
TRIM = ["usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale", "usr/share/lintian"]

PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
VERSION = PROJECT["version"]


@dataclass(frozen=True)
class Image:
    name: str
    extra: str
    entrypoint: str
    scripts: tuple[str, ...]
    ports: tuple[int, ...]
    description: str
    requirements: tuple[str, ...] = ()
    """For an image that is not ours (`extra` empty): the distributions installed instead of the wheel."""
    files: tuple[tuple[str, str], ...] = ()
    """(path in the repository, path in the image) copied into the image layer."""
    default: bool = True
    """Built by `scripts/images` without arguments (the images the chart runs)."""
    prune: tuple[str, ...] = ()
    """Globs under site-packages removed after install: parts of dependencies we never load."""
    check: str = ""
    """Python run in the image after pruning: proves what we kept still does our job."""

    @property
    def repository(self) -> str:
        return f"modelroute/{self.name}"

    @property
    def reference(self) -> str:
        """The name the kubelet asks containerd for (the chart's `repository:tag`, normalised)."""
        return f"docker.io/{self.repository}:{VERSION}"


SPECS = {
    "operator": Image(
        "operator", "operator", "modelroute-operator", ("modelroute-operator", "modelroute"), (9443, 8081),
        "Kopf operator compiling ModelEndpoint, RoutingPolicy and Canary into router configs",
    ),
    "sidecar": Image(
        "sidecar", "sidecar", "modelroute-sidecar", ("modelroute-sidecar",), (8080, 9901),
        "OpenAI-compatible LLM router sidecar",
        # botocore's 28 MiB of service models serve its clients; we only sign SigV4 requests and decode
        # event streams (providers/aws.py), which read none of them. numpy's tests are 17 MiB.
        prune=("botocore/data", "numpy/tests", "numpy/*/tests"),
        check=(
            "from modelroute_sidecar.providers.aws import AwsKeys, EventFrames, sign; "
            "h = sign(AwsKeys('AKIDEXAMPLE', 'secret', None), 'eu-west-1', "
            "'https://bedrock-runtime.eu-west-1.amazonaws.com/model/m/converse', b'{}', {}); "
            "assert h['authorization'].startswith('AWS4-HMAC-SHA256'); EventFrames(); "
            "import numpy; assert float(numpy.ones(3).sum()) == 3.0"
        ),
    ),
    "demo-app": Image(
        "demo-app", "", "/usr/bin/python3", (), (),
        "scripts/demo's application: the official openai SDK calling the injected router",
        requirements=(f"openai=={importlib.metadata.version('openai')}",),
        files=(("scripts/demo_app.py", "opt/modelroute-demo/app.py"),),
        default=False,
    ),
}
DEFAULT_IMAGES = sorted(name for name, spec in SPECS.items() if spec.default)


def log(msg: str) -> None:
    print(f"[images] {msg}", file=sys.stderr, flush=True)


def run(*cmd: str | Path, capture: bool = False, **kw: object) -> str:
    out = subprocess.run(
        [str(c) for c in cmd], check=True, text=True, stdout=subprocess.PIPE if capture else sys.stderr, **kw
    )  # type: ignore[call-overload]
    return str(out.stdout or "")


def buildah(*args: str | Path, capture: bool = True) -> str:
    # A storage of our own: buildah's images of this project never mix with anything else on the host.
    store = CACHE / "buildah"
    return run(
        "buildah", "--root", store / "storage", "--runroot", store / "run", "--storage-driver", "overlay",
        *args, capture=capture,
    ).strip()


def debian_mirror() -> str | None:
    """The Debian mirror this machine's apt already uses (so a local mirror is honoured); None lets
    mmdebstrap pick its default."""
    for path in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        for stanza in path.read_text().split("\n\n"):
            fields = dict(
                line.split(":", 1) for line in stanza.splitlines() if ":" in line and not line.startswith("#")
            )
            uris, suites = fields.get("URIs", "").split(), fields.get("Suites", "").split()
            if uris and any(re.fullmatch(r"[a-z]+(-updates)?", s) for s in suites) and "debian" in uris[0]:
                return uris[0]
    listing = Path("/etc/apt/sources.list")
    if listing.exists():
        for line in listing.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[0] == "deb" and "security" not in parts[2] and "debian" in parts[1]:
                return parts[1]
    return None


# -- 1. the base root filesystem ----------------------------------------------------------------


def base_key() -> str:
    blob = json.dumps({"suite": SUITE, "packages": sorted(BASE_PACKAGES), "recipe": BASE_RECIPE})
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def build_rootfs() -> tuple[Path, dict[str, str]]:
    """The base root filesystem tar and what it holds (python version, glibc), built once per key."""
    key = base_key()
    tar, meta_file = IMAGES / f"rootfs-{key}.tar", IMAGES / f"rootfs-{key}.json"
    if tar.exists() and meta_file.exists():
        return tar, json.loads(meta_file.read_text())
    IMAGES.mkdir(parents=True, exist_ok=True)
    log(f"building the base root filesystem: Debian {SUITE} {' '.join(BASE_PACKAGES)} (about a minute)")
    with tempfile.TemporaryDirectory(dir=IMAGES, prefix="rootfs-") as tmp:
        root = Path(tmp) / "root"
        mirror = debian_mirror()
        run(
            "mmdebstrap", "--variant=extract", "--mode=root", "--format=directory",
            f"--include={','.join(BASE_PACKAGES)}",
            *[f"--dpkgopt=path-exclude=/{d}/*" for d in TRIM],
            SUITE, root, *([mirror] if mirror else []),
        )
        # extract runs no maintainer scripts: do by hand the few that matter at run time.
        for d in ("bin", "lib", "lib64", "sbin"):  # the merged-/usr links base-files would make
            if (root / "usr" / d).is_dir() and not (root / d).exists():
                (root / d).symlink_to(f"usr/{d}")
        for d in TRIM:
            shutil.rmtree(root / d, ignore_errors=True)
        certs = sorted((root / "usr/share/ca-certificates").rglob("*.crt"))
        assert certs, "ca-certificates brought no certificates"
        (root / "etc/ssl/certs").mkdir(parents=True, exist_ok=True)
        (root / "etc/ssl/certs/ca-certificates.crt").write_text("".join(c.read_text() for c in certs))
        (root / "etc/passwd").write_text(
            "root:x:0:0:root:/root:/usr/sbin/nologin\n"
            "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
            f"modelroute:x:{UID}:{UID}:modelroute:/nonexistent:/usr/sbin/nologin\n"
        )
        (root / "etc/group").write_text(f"root:x:0:\nnogroup:x:65534:\nmodelroute:x:{UID}:\n")
        (root / "tmp").mkdir(exist_ok=True)
        (root / "tmp").chmod(0o1777)
        probe = run(
            "chroot", root, "/usr/bin/python3", "-c",
            "import json, platform, ssl, sys; print(json.dumps({'python': '%d.%d' % sys.version_info[:2],"
            " 'python_full': platform.python_version(), 'glibc': platform.libc_ver()[1],"
            " 'openssl': ssl.OPENSSL_VERSION}))",
            capture=True,
        )
        meta = json.loads(probe)
        if meta["python"] != SUITE_PYTHON.get(SUITE):
            want = SUITE_PYTHON.get(SUITE)
            raise SystemExit(f"Debian {SUITE} ships Python {meta['python']}, expected {want}")
        # Hash-checked bytecode that is never re-validated: the files never change in an image, and a
        # read-only root cannot write the timestamps' replacement anyway.
        run(
            "chroot", root, "/usr/bin/python3", "-m", "compileall", "-q", "-j0",
            "--invalidation-mode", "unchecked-hash", f"/usr/lib/python{meta['python']}",
        )
        run("tar", "--numeric-owner", "--xattrs", "-C", root, "-cf", f"{tar}.tmp", ".")
        os.replace(f"{tar}.tmp", tar)
    meta["packages"] = " ".join(BASE_PACKAGES)
    meta["suite"] = SUITE
    meta_file.write_text(json.dumps(meta, indent=1))
    return tar, meta


def base_image(tar: Path) -> str:
    """The buildah image made of the root filesystem (one layer, shared by both images)."""
    name = f"localhost/modelroute-base:{base_key()}"
    known = subprocess.run(
        ["buildah", "--root", CACHE / "buildah/storage", "--runroot", CACHE / "buildah/run",
         "inspect", "--type", "image", name], capture_output=True,
    )
    if known.returncode == 0:
        return name
    ctr = buildah("from", "scratch")
    try:
        buildah("add", ctr, tar, "/")
        buildah("commit", "--quiet", "--format", "oci", ctr, name)
    finally:
        buildah("rm", ctr)
    return name


# -- 2. the wheel and each image's packages -----------------------------------------------------


def build_wheel(out: Path) -> Path:
    run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--wheel-dir", out, REPO)
    (wheel,) = out.glob("modelroute-*.whl")
    return wheel


def wheel_digest(wheel: Path) -> str:
    """Content of the wheel, independent of the zip's timestamps."""
    h = hashlib.sha256()
    with zipfile.ZipFile(wheel) as z:
        for name in sorted(z.namelist()):
            if name.endswith("/RECORD"):
                continue
            h.update(name.encode() + b"\0" + z.read(name))
    return h.hexdigest()


def install_packages(image: Image, wheel: Path, meta: dict[str, str], into: Path) -> None:
    """`pip install <wheel>[extra]` for the base's interpreter and glibc, into the image's tree."""
    py = meta["python"]
    site = into / "usr/local/lib" / f"python{py}" / "dist-packages"
    # pip does not widen a manylinux tag to older glibc versions itself: name every one the base runs.
    major, minor = (int(x) for x in meta["glibc"].split(".")[:2])
    platforms = [f"manylinux_{major}_{m}_x86_64" for m in range(minor, 4, -1)]
    platforms += ["manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"]
    run(
        sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-compile",
        "--target", site, "--only-binary=:all:", "--implementation", "cp", "--python-version", py,
        "--abi", f"cp{py.replace('.', '')}", *[a for p in platforms for a in ("--platform", p)],
        *(image.requirements or (f"{wheel}[{image.extra}]",)),
    )
    # pip --target writes console scripts for the interpreter running pip; the image's own follow.
    shutil.rmtree(site / "bin", ignore_errors=True)
    for pattern in image.prune:
        for path in site.glob(pattern):
            shutil.rmtree(path)
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    bindir = into / "usr/local/bin"
    bindir.mkdir(parents=True)
    for source, target in image.files:
        (into / target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO / source, into / target)
    for name in image.scripts:
        module, func = scripts[name].split(":")
        path = bindir / name
        path.write_text(
            f"#!/usr/bin/python3\nimport sys\nfrom {module} import {func}\nsys.exit({func}())\n"
        )
        path.chmod(0o755)


# -- 3. the images -----------------------------------------------------------------------------


def image_key(image: Image, wheel_key: str) -> str:
    """What an image's content depends on: our wheel, or (an image that is not ours) its requirements
    and files, so the demo's app is not rebuilt for every change of our sources."""
    if image.extra:
        return wheel_key
    parts = [*image.requirements, *(f"{t}={hashlib.sha256((REPO / s).read_bytes()).hexdigest()}"
                                    for s, t in image.files), base_key(), str(IMAGE_RECIPE)]
    return hashlib.sha256(" ".join(parts).encode()).hexdigest()[:12]


def build_image(image: Image, base: str, wheel: Path, meta: dict[str, str], key: str) -> Path:
    archive = IMAGES / f"modelroute-{image.name}-{VERSION}-{key}.oci.tar"
    if archive.exists():
        return archive
    log(f"building {image.reference}")
    with tempfile.TemporaryDirectory(dir=IMAGES, prefix=f"{image.name}-") as tmp:
        tree = Path(tmp) / "tree"
        install_packages(image, wheel, meta, tree)
        ctr = buildah("from", "--pull-never", base)
        try:
            buildah("copy", ctr, tree, "/")
            buildah(
                "run", "--isolation", "chroot", ctr, "--",
                "/usr/bin/python3", "-m", "compileall", "-q", "-j0",
                "--invalidation-mode", "unchecked-hash", f"/usr/local/lib/python{meta['python']}",
            )
            if image.check:
                buildah("run", "--isolation", "chroot", ctr, "--", "/usr/bin/python3", "-c", image.check)
            config = [
                "--user", f"{UID}:{UID}", "--workingdir", "/tmp",
                "--entrypoint", json.dumps([image.entrypoint]), "--cmd", "",
                "--env", "PYTHONUNBUFFERED=1", "--env", "PYTHONDONTWRITEBYTECODE=1",
                "--label", f"org.opencontainers.image.title=modelroute-{image.name}",
                "--label", f"org.opencontainers.image.description={image.description}",
                "--label", f"org.opencontainers.image.version={VERSION}",
                "--label", "org.opencontainers.image.licenses=Apache-2.0",
                "--label", f"dev.modelroute.base=debian-{meta['suite']}-python{meta['python_full']}",
            ]
            for port in image.ports:
                config += ["--port", str(port)]
            buildah("config", *config, ctr)
            buildah("commit", "--quiet", "--format", "oci", ctr, f"localhost/{image.repository}:{key}")
        finally:
            buildah("rm", ctr)
        # The archive's ref name is the full reference, so `ctr images import` names it as the kubelet
        # will ask for it.
        buildah("push", "--quiet", f"localhost/{image.repository}:{key}",
                f"oci-archive:{archive}.tmp:{image.reference}")
        os.replace(f"{archive}.tmp", archive)
        buildah("rmi", f"localhost/{image.repository}:{key}")
    return archive


# -- 4. smoke run and cold start ------------------------------------------------------------------


def unpack(archive: Path, image: Image, into: Path) -> Path:
    """An OCI runtime bundle of the archive, as a runtime would make it from the image's config."""
    layout = into / "layout"
    layout.mkdir()
    run("tar", "-C", layout, "-xf", archive)
    bundle = into / "bundle"
    run("umoci", "unpack", "--image", f"{layout}:{image.reference}", bundle)
    return bundle


def configure(bundle: Path) -> list[str]:
    """Run as the chart does: read-only root, a tmpfs /tmp, the image's user, no capabilities; host
    network so the probe reaches the admin port on loopback; the limits this machine allows. Returns
    the image's own command (entrypoint + cmd) as umoci wrote it."""
    path = bundle / "config.json"
    spec = json.loads(path.read_text())
    process = spec["process"]
    assert process["user"]["uid"] == UID and process["user"]["gid"] == UID, process["user"]
    process["terminal"] = False
    process["rlimits"] = [
        {"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024},
        {"type": "RLIMIT_NPROC", "hard": 1024, "soft": 1024},
    ]
    process["noNewPrivileges"] = True
    sets = ("bounding", "effective", "inheritable", "permitted", "ambient")
    process["capabilities"] = {k: [] for k in sets}
    spec["root"]["readonly"] = True
    spec["mounts"].append(
        {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "nodev", "size=64m"]}
    )
    spec["linux"]["namespaces"] = [n for n in spec["linux"]["namespaces"] if n["type"] != "network"]
    path.write_text(json.dumps(spec))
    return list(process["args"])


def set_args(bundle: Path, args: list[str]) -> None:
    path = bundle / "config.json"
    spec = json.loads(path.read_text())
    spec["process"]["args"] = args
    path.write_text(json.dumps(spec))


def smoke(image: Image, archive: Path, runs: int = 3) -> list[float]:
    """Seconds from `runc run` to ready, for `runs` starts; raises when the image does not start."""
    timings: list[float] = []
    with tempfile.TemporaryDirectory(prefix=f"smoke-{image.name}-") as tmp:
        bundle = unpack(archive, image, Path(tmp))
        command = configure(bundle)
        assert command[0] == image.entrypoint, command
        for attempt in range(runs):
            admin = free_port()
            if image.name == "sidecar":
                args = ["--host", "127.0.0.1", "--port", str(free_port()), "--admin-host", "127.0.0.1",
                        "--admin-port", str(admin)]
            else:
                args = ["--help"]
            set_args(bundle, command + args)
            cid = f"modelroute-smoke-{image.name}-{os.getpid()}-{attempt}"
            logfile = Path(tmp) / f"{cid}.log"
            start = time.monotonic()
            with logfile.open("w") as out:
                proc = subprocess.Popen(["runc", "run", "--bundle", str(bundle), cid], stdout=out, stderr=out,
                                        stdin=subprocess.DEVNULL)
            try:
                timings.append(wait_ready(image, proc, admin, start, logfile))
            finally:
                if proc.poll() is None:
                    subprocess.run(["runc", "kill", cid, "KILL"], capture_output=True)
                    proc.wait(timeout=20)
                subprocess.run(["runc", "delete", "--force", cid], capture_output=True)
    return timings


def wait_ready(image: Image, proc: subprocess.Popen[bytes], admin: int, start: float, logfile: Path) -> float:
    deadline = start + 30
    while time.monotonic() < deadline:
        if image.name == "operator":
            if proc.poll() is not None:
                if proc.returncode != 0 or "modelroute-operator" not in logfile.read_text():
                    raise RuntimeError(f"operator image --help failed:\n{logfile.read_text()[-2000:]}")
                return time.monotonic() - start
        else:
            if proc.poll() is not None:
                raise RuntimeError(f"sidecar image exited {proc.returncode}:\n{logfile.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{admin}/healthz", timeout=1) as resp:
                    if resp.status == 200:
                        return time.monotonic() - start
            except OSError:
                pass
        time.sleep(0.02)
    raise TimeoutError(f"{image.name} image not ready in 30 s:\n{logfile.read_text()[-2000:]}")


def unpacked_bytes(archive: Path) -> int:
    """Sum of the uncompressed layer sizes (what the image takes on a node)."""
    with tempfile.TemporaryDirectory() as tmp:
        run("tar", "-C", tmp, "-xf", archive)
        index = json.loads((Path(tmp) / "index.json").read_text())
        blob = lambda d: Path(tmp) / "blobs" / d.replace(":", "/")  # noqa: E731
        manifest = json.loads(blob(index["manifests"][0]["digest"]).read_text())
        total = 0
        for layer in manifest["layers"]:
            out = subprocess.run(
                ["gzip", "-dc", str(blob(layer["digest"]))], stdout=subprocess.PIPE, check=True
            )
            total += len(out.stdout)
        return total


def mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/images", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "images", nargs="*", help=f"of {', '.join(sorted(SPECS))} (default: {', '.join(DEFAULT_IMAGES)})"
    )
    parser.add_argument("--no-smoke", action="store_true", help="skip the runc smoke run and timings")
    parser.add_argument("--runs", type=int, default=3, help="cold starts timed per image (default 3)")
    args = parser.parse_args(argv)
    unknown = set(args.images) - set(SPECS)
    if unknown:
        parser.error(f"unknown image {sorted(unknown)}: choose from {sorted(SPECS)}")
    tar, meta = build_rootfs()
    base = base_image(tar)
    with tempfile.TemporaryDirectory(prefix="modelroute-wheel-") as tmp:
        wheel = build_wheel(Path(tmp))
        key = hashlib.sha256(
            f"{wheel_digest(wheel)} {base_key()} {IMAGE_RECIPE}".encode()
        ).hexdigest()[:12]
        index = json.loads(INDEX.read_text()) if INDEX.exists() else {}
        for name in args.images or DEFAULT_IMAGES:
            image = SPECS[name]
            archive = build_image(image, base, wheel, meta, image_key(image, key))
            entry = index.get(name, {})
            if entry.get("archive") != str(archive):
                entry = {"reference": image.reference, "archive": str(archive)}
            entry["archive_bytes"] = archive.stat().st_size
            entry.setdefault("unpacked_bytes", unpacked_bytes(archive))
            entry["base"] = f"debian-{meta['suite']} python {meta['python_full']} glibc {meta['glibc']}"
            if not args.no_smoke and image.extra:  # an image that is not ours has no server to time
                timings = smoke(image, archive, args.runs)
                entry["cold_start_seconds"] = [round(t, 3) for t in timings]
            index[name] = entry
            cold = entry.get("cold_start_seconds")
            print(
                f"{image.reference}  archive {mib(entry['archive_bytes'])}"
                f"  unpacked {mib(entry['unpacked_bytes'])}"
                + (f"  cold start {cold[0]:.2f} s (then {', '.join(f'{t:.2f}' for t in cold[1:])} s)"
                   if cold else "")
                + f"  {archive}"
            )
        INDEX.parent.mkdir(parents=True, exist_ok=True)
        INDEX.write_text(json.dumps(index, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
