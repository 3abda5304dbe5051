"""A real single-node Kubernetes cluster on this machine: `scripts/cluster up|down|status|env`.

etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kube-proxy and kubelet v1.34 (built from
Go modules by scripts/k8s-bins/build.sh, cached by version), containerd and runc from Debian's
packages, the CNI bridge/host-local/portmap/loopback plugins (Go modules), a pause image built here from
the release's own pause.c, and the modelroute images from scripts/images imported into containerd.

Everything runs inside one network namespace this script creates (`modelroute-node`): the node's
address, the CNI bridge and the pods behind it, kube-proxy's iptables rules and every component's port.
Nothing of it touches the host's firewall. A veth pair joins it to the host (host 10.233.0.1, node
10.233.0.2) with host routes to the pod and service ranges, so tests on the host reach the API server,
pods and Services, and pods reach servers the tests run on 10.233.0.1. The node namespace has no default
route: pod traffic cannot leave the machine.

Facts of this machine the set-up follows (see ../shared/CONTROL-PLANE.md): root in a VM, cgroups v1
(hybrid), so the kubelet runs with `cgroupDriver: cgroupfs` and `failCgroupV1: false`, and containerd
uses runc (crun refuses hybrid cgroups); hard limits nofile 20000, so containers get 1024:1024 (any more
fails with "setrlimit RLIMIT_NOFILE: Operation not permitted") and no CAP_SYS_RESOURCE, so
containerd clamps oom_score_adj (`restrict_oom_score_adj`); no image registry, so every image is
imported and pods use `imagePullPolicy: IfNotPresent`/`Never`; no DNS in the cluster (nothing here needs
one: clients reach the API by the Service IP, the sidecars by pod IP).

State lives in `.local/cluster` (MODELROUTE_CLUSTER_DIR); `down` stops every process it started (by pid),
kills the pods' containers, unmounts what the kubelet and containerd mounted there, removes the pod
cgroups and deletes the namespace. Standard library only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

import images  # noqa: E402  (scripts/images.py: the buildah helpers and the image index)

K8S_VERSION = os.environ.get("K8S_VERSION", "v1.34.4")
CACHE = images.CACHE
STATE = Path(os.environ.get("MODELROUTE_CLUSTER_DIR", REPO / ".local" / "cluster"))
NETNS = "modelroute-node"
NODE = "modelroute-node"
HOST_IF, NODE_IF = "mr-host", "mr-node"
HOST_IP, NODE_IP = "10.233.0.1", "10.233.0.2"
LINK_NET = "10.233.0.0/30"
POD_CIDR = "10.244.0.0/24"
SERVICE_CIDR = "10.96.0.0/24"
API_SERVICE_IP = "10.96.0.1"
API_PORT = 6443
BRIDGE = "mr0"
IN_NODE = ["nsenter", f"--net=/run/netns/{NETNS}", "--"]
"""Run in the node's network namespace only. Not `ip netns exec`: that also gives each process a mount
namespace of its own, and the kubelet's volume mounts must be the ones containerd's runc sees."""
PAUSE_IMAGE = "registry.k8s.io/pause:3.10.1"
"""The sandbox image name containerd asks for (the release's own pause version); built here."""
CGROUP_CONTROLLERS = ("cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids", "systemd",
                      "unified")
COMPONENTS = ["etcd", "kube-apiserver", "containerd", "kube-controller-manager", "kube-scheduler",
              "kube-proxy", "kubelet"]


def log(msg: str) -> None:
    print(f"[cluster] {msg}", file=sys.stderr, flush=True)


def sh(*cmd: str | Path, check: bool = True, netns: bool = False, capture: bool = True) -> str:
    argv = [str(c) for c in cmd]
    if netns:
        argv = [*IN_NODE, *argv]
    out = subprocess.run(argv, check=check, text=True, stdout=subprocess.PIPE if capture else sys.stderr,
                         stderr=subprocess.PIPE if capture else sys.stderr)
    return (out.stdout or "").strip()


def wait_for(check: Callable[[], object], what: str, timeout: float, logs: tuple[str, ...] = ()) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        for name in logs:
            if not alive(name):
                raise RuntimeError(f"{name} exited while waiting for {what}:\n{tail(name)}")
        try:
            if check():
                return
        except Exception as exc:  # converging
            last = exc
        time.sleep(0.25)
    detail = "\n".join(f"--- {n}\n{tail(n)}" for n in logs)
    raise TimeoutError(f"{what} not ready after {timeout:.0f}s (last error: {last})\n{detail}")


def write(path: Path, text: str) -> None:
    """Write only a change: kube-proxy exits when its config file is rewritten, even to the same text."""
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


# -- binaries and images ------------------------------------------------------------------------


def binaries() -> tuple[Path, Path]:
    build = REPO / "scripts" / "k8s-bins" / "build.sh"
    k8s = Path(sh("bash", build, "node").splitlines()[-1])
    cni = Path(sh("bash", build, "cni").splitlines()[-1])
    return k8s, cni


def pause_archive() -> Path:
    """The sandbox image, from the pinned release's own build/pause/linux/pause.c, static."""
    out = images.IMAGES / f"pause-{K8S_VERSION}.oci.tar"
    if out.exists():
        return out
    src = Path(sh("go", "env", "GOMODCACHE")) / f"k8s.io/kubernetes@{K8S_VERSION}/build/pause/linux/pause.c"
    if not src.exists():
        sh("go", "mod", "download", f"k8s.io/kubernetes@{K8S_VERSION}")
    images.IMAGES.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        binary = Path(tmp) / "pause"
        sh("gcc", "-Os", "-static", "-DVERSION=v3.10.1-modelroute", "-o", binary, src)
        sh("strip", binary)
        ctr = images.buildah("from", "scratch")
        try:
            images.buildah("copy", "--chmod", "0755", ctr, binary, "/pause")
            images.buildah("config", "--entrypoint", '["/pause"]', "--user", "65535:65535", ctr)
            images.buildah("commit", "--quiet", "--format", "oci", ctr, "localhost/modelroute-pause:build")
        finally:
            images.buildah("rm", ctr)
        images.buildah("push", "--quiet", "localhost/modelroute-pause:build",
                       f"oci-archive:{out}.tmp:{PAUSE_IMAGE}")
        images.buildah("rmi", "localhost/modelroute-pause:build")
        os.replace(f"{out}.tmp", out)
    return out


# -- processes ------------------------------------------------------------------------------------


def pidfile(name: str) -> Path:
    return STATE / "run" / f"{name}.pid"


_STARTED: set[int] = set()
"""Pids this process started: alive while they run, even mid-exec (when /proc/<pid>/cmdline is empty)."""


def alive(name: str) -> bool:
    try:
        pid = int(pidfile(name).read_text())
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return False
    if stat.rpartition(")")[2].split()[0] == "Z":
        return False
    if pid in _STARTED:
        return True
    # A pid may be reused: an older run's pid is ours only if its command line names our state directory.
    try:
        return str(STATE) in Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return False


def tail(name: str, lines: int = 25) -> str:
    try:
        return "\n".join((STATE / "logs" / f"{name}.log").read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def start(name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
    if alive(name):
        return
    (STATE / "logs").mkdir(parents=True, exist_ok=True)
    (STATE / "run").mkdir(parents=True, exist_ok=True)
    logf = (STATE / "logs" / f"{name}.log").open("ab")
    # alive() relies on each command line naming a path under STATE, which every one of them does.
    proc = subprocess.Popen(
        [*IN_NODE, *argv], stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True, env={**os.environ, **(env or {})},
    )
    # nsenter without --fork execs the command: the pid is the component's own.
    pidfile(name).write_text(str(proc.pid))
    _STARTED.add(proc.pid)


def stop(*names: str, timeout: float = 15.0) -> None:
    """SIGTERM to each of `names` at once, SIGKILL to what still runs after `timeout`."""
    pids = []
    for name in names:
        if alive(name):
            pid = int(pidfile(name).read_text())
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            pids.append(pid)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in pids):
        for pid in pids:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
        time.sleep(0.1)
    for pid in pids:
        if Path(f"/proc/{pid}").exists():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    for name in names:
        pidfile(name).unlink(missing_ok=True)


# -- network --------------------------------------------------------------------------------------


def netns_exists() -> bool:
    return NETNS in sh("ip", "netns", "list", check=False).split()


def network_up() -> None:
    if not netns_exists():
        sh("ip", "netns", "add", NETNS)
    sh("ip", "link", "set", "lo", "up", netns=True)
    if not Path(f"/sys/class/net/{HOST_IF}").exists():
        sh("ip", "link", "add", HOST_IF, "type", "veth", "peer", "name", NODE_IF, "netns", NETNS)
        sh("ip", "addr", "add", f"{HOST_IP}/30", "dev", HOST_IF)
        sh("ip", "addr", "add", f"{NODE_IP}/30", "dev", NODE_IF, netns=True)
    # Local processes (the API server calling a webhook's Service) need a route to the service range
    # before kube-proxy's OUTPUT rules rewrite the address: a sink device, as kube-proxy's IPVS mode
    # uses a dummy one. This kernel has no dummy driver ("Unknown device type"), so an empty bridge. A
    # Service IP no rule knows ends there.
    if not sh("ip", "link", "show", "mr-svc", netns=True, check=False):
        sh("ip", "link", "add", "mr-svc", "type", "bridge", netns=True)
    sh("ip", "link", "set", "mr-svc", "up", netns=True)
    sh("ip", "route", "replace", SERVICE_CIDR, "dev", "mr-svc", netns=True)
    sh("ip", "link", "set", HOST_IF, "up")
    sh("ip", "link", "set", NODE_IF, "up", netns=True)
    for net in (POD_CIDR, SERVICE_CIDR):
        sh("ip", "route", "replace", net, "via", NODE_IP, "dev", HOST_IF)
    # Per-namespace settings: forwarding between the veth and the bridge, bridged pod traffic seen by
    # kube-proxy's rules. No default route: nothing from a pod leaves the machine.
    for key, value in (("net.ipv4.ip_forward", "1"), ("net.bridge.bridge-nf-call-iptables", "1"),
                       ("net.ipv4.conf.all.route_localnet", "1")):
        sh("sysctl", "-q", "-w", f"{key}={value}", netns=True, check=False)


def network_down() -> None:
    if Path(f"/sys/class/net/{HOST_IF}").exists():
        sh("ip", "link", "del", HOST_IF, check=False)  # its peer and the host routes go with it
    if netns_exists():
        sh("ip", "netns", "del", NETNS, check=False)


# -- PKI ------------------------------------------------------------------------------------------


def pki() -> Path:
    d = STATE / "pki"
    if (d / "done").exists():
        return d
    d.mkdir(parents=True, exist_ok=True)

    def openssl(*args: str | Path) -> None:
        sh("openssl", *args)

    # Key usages and key identifiers throughout: Python 3.13 verifies strictly (VERIFY_X509_STRICT), and
    # refuses a CA without keyUsage ("CA cert does not include key usage extension").
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650", "-subj", "/CN=modelroute-ca",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout", d / "ca.key", "-out", d / "ca.crt")
    openssl("genrsa", "-out", d / "sa.key", "2048")
    openssl("rsa", "-in", d / "sa.key", "-pubout", "-out", d / "sa.pub")

    def cert(name: str, subject: str, sans: str = "", server: bool = False) -> None:
        ext = d / f"{name}.ext"
        usage = "serverAuth" if server else "clientAuth"
        ext.write_text(
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
            "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n"
            f"extendedKeyUsage={usage}\n" + (f"subjectAltName={sans}\n" if sans else "")
        )
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", subject, "-keyout", d / f"{name}.key",
                "-out", d / f"{name}.csr")
        openssl("x509", "-req", "-in", d / f"{name}.csr", "-CA", d / "ca.crt", "-CAkey", d / "ca.key",
                "-CAcreateserial", "-days", "3650", "-extfile", ext, "-out", d / f"{name}.crt")

    cert("apiserver", "/CN=kube-apiserver", server=True, sans=",".join([
        f"IP:{NODE_IP}", f"IP:{API_SERVICE_IP}", "IP:127.0.0.1", "DNS:kubernetes", "DNS:kubernetes.default",
        "DNS:kubernetes.default.svc", "DNS:kubernetes.default.svc.cluster.local", "DNS:localhost"]))
    cert("kubelet-server", f"/CN={NODE}", server=True, sans=f"IP:{NODE_IP},DNS:{NODE}")
    cert("admin", "/O=system:masters/CN=admin")
    cert("apiserver-kubelet-client", "/O=system:masters/CN=kube-apiserver-kubelet-client")
    cert("controller-manager", "/CN=system:kube-controller-manager")
    cert("scheduler", "/CN=system:kube-scheduler")
    cert("kube-proxy", "/CN=system:kube-proxy")
    cert("kubelet", f"/O=system:nodes/CN=system:node:{NODE}")
    for name in ("admin", "controller-manager", "scheduler", "kube-proxy", "kubelet"):
        kubeconfig(d, name, STATE / f"{name}.kubeconfig")
    (d / "done").write_text("")
    return d


def kubeconfig(d: Path, user: str, path: Path) -> None:
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "modelroute",
        "clusters": [{"name": "modelroute", "cluster": {
            "server": f"https://{NODE_IP}:{API_PORT}", "certificate-authority": str(d / "ca.crt")}}],
        "users": [{"name": user, "user": {
            "client-certificate": str(d / f"{user}.crt"), "client-key": str(d / f"{user}.key")}}],
        "contexts": [{"name": "modelroute", "context": {"cluster": "modelroute", "user": user}}],
    }, indent=1))


def api_ready(d: Path, path: str = "/readyz") -> bool:
    ctx = ssl.create_default_context(cafile=str(d / "ca.crt"))
    ctx.load_cert_chain(str(d / "admin.crt"), str(d / "admin.key"))
    with urllib.request.urlopen(f"https://{NODE_IP}:{API_PORT}{path}", context=ctx, timeout=3) as resp:
        return resp.status == 200


# -- components -----------------------------------------------------------------------------------


def containerd_config(cni_bin: Path) -> Path:
    root = STATE / "containerd"
    cfg = root / "config.toml"
    root.mkdir(parents=True, exist_ok=True)
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    write(cfg, f"""version = 2
root = "{root}/root"
state = "{root}/state"
[grpc]
  address = "{root}/containerd.sock"
[ttrpc]
  address = "{root}/containerd.sock.ttrpc"
[debug]
  level = "info"
[plugins."io.containerd.internal.v1.opt"]
  path = "{root}/opt"
[{cri}]
  sandbox_image = "{PAUSE_IMAGE}"
  enable_cdi = false
  # The sandbox this runs in lacks CAP_SYS_RESOURCE, so runc cannot lower a process's oom_score_adj
  # below its parent's (the kubelet asks -998 for sandboxes: "failed to update /proc/self/oom_score_adj:
  # Permission denied"). Restricted, containerd clamps the value to its own.
  restrict_oom_score_adj = true
  [{cri}.containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [{cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{cri}.containerd.runtimes.runc.options]
        BinaryName = "{shutil.which('runc') or '/usr/sbin/runc'}"
        SystemdCgroup = false
  [{cri}.cni]
    bin_dir = "{cni_bin}"
    conf_dir = "{STATE}/cni/net.d"
""")
    net = STATE / "cni" / "net.d"
    net.mkdir(parents=True, exist_ok=True)
    write(net / "10-modelroute.conflist", json.dumps({
        "cniVersion": "1.0.0", "name": "modelroute", "plugins": [
            {"type": "bridge", "bridge": BRIDGE, "isGateway": True, "ipMasq": False, "hairpinMode": True,
             "ipam": {"type": "host-local", "dataDir": str(STATE / "cni" / "ipam"),
                      "ranges": [[{"subnet": POD_CIDR}]], "routes": [{"dst": LINK_NET},
                                                                    {"dst": SERVICE_CIDR}]}},
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ]}, indent=1))
    return cfg


def ctr(*args: str | Path, check: bool = True) -> str:
    sock = STATE / "containerd" / "containerd.sock"
    return sh("ctr", "--address", sock, "-n", "k8s.io", *args, check=check)


def import_images() -> dict[str, str]:
    archives = {"pause": str(pause_archive())}
    index = json.loads(images.INDEX.read_text()) if images.INDEX.exists() else {}
    for name in images.SPECS:
        if name in index and Path(index[name]["archive"]).exists():
            archives[name] = index[name]["archive"]
    for archive in archives.values():
        ctr("images", "import", archive)
    return archives


def kubelet_config(d: Path) -> Path:
    cfg = STATE / "kubelet.yaml"
    write(STATE / "resolv.conf", "# no cluster DNS: clients use IP addresses\n")
    write(cfg, json.dumps({
        "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
        "address": NODE_IP, "port": 10250, "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1", "healthzPort": 10248,
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                           "x509": {"clientCAFile": str(d / "ca.crt")}},
        "authorization": {"mode": "Webhook"},
        "tlsCertFile": str(d / "kubelet-server.crt"), "tlsPrivateKeyFile": str(d / "kubelet-server.key"),
        "cgroupDriver": "cgroupfs", "failCgroupV1": False, "failSwapOn": False,
        "containerRuntimeEndpoint": f"unix://{STATE}/containerd/containerd.sock",
        "resolvConf": str(STATE / "resolv.conf"), "podLogsDir": str(STATE / "pod-logs"),
        "clusterDomain": "cluster.local", "registerNode": True, "maxPods": 60,
        "serializeImagePulls": False, "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "2%", "imagefs.available": "2%"},
        "containerLogMaxSize": "10Mi", "shutdownGracePeriod": "0s",
        "enforceNodeAllocatable": ["pods"], "cgroupsPerQOS": True,
        "staticPodPath": "", "rotateCertificates": False, "serverTLSBootstrap": False,
        "syncFrequency": "10s", "fileCheckFrequency": "10s", "nodeStatusReportFrequency": "10s",
    }, indent=1))
    return cfg


def kube_proxy_config() -> Path:
    cfg = STATE / "kube-proxy.yaml"
    write(cfg, json.dumps({
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(STATE / "kube-proxy.kubeconfig")},
        "mode": "iptables", "clusterCIDR": POD_CIDR, "hostnameOverride": NODE,
        "bindAddress": NODE_IP, "healthzBindAddress": "127.0.0.1:10256",
        "metricsBindAddress": "127.0.0.1:10249",
        # Service traffic leaves with the node's address, so a reply between two pods on the bridge comes
        # back through the rules that translated it.
        "iptables": {"masqueradeAll": True, "syncPeriod": "10s", "minSyncPeriod": "0s"},
        # conntrack limits are the host's to set; a namespace cannot change them.
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
    }, indent=1))
    return cfg


def up(timeout: float = 240.0) -> None:
    if os.geteuid() != 0:
        raise SystemExit("scripts/cluster needs root (network namespace, containerd, kubelet)")
    t0 = time.monotonic()
    STATE.mkdir(parents=True, exist_ok=True)
    k8s, cni = binaries()
    network_up()
    d = pki()
    etcd_dir = STATE / "etcd"
    start("etcd", [str(k8s / "etcd"), "--data-dir", str(etcd_dir), "--listen-client-urls", "http://127.0.0.1:2379",
                   "--advertise-client-urls", "http://127.0.0.1:2379", "--listen-peer-urls", "http://127.0.0.1:2380",
                   "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
                   "--initial-cluster", "default=http://127.0.0.1:2380", "--quota-backend-bytes", str(2**31)])
    start("kube-apiserver", [
        str(k8s / "kube-apiserver"), "--etcd-servers=http://127.0.0.1:2379",
        f"--bind-address={NODE_IP}", f"--advertise-address={NODE_IP}", f"--secure-port={API_PORT}",
        f"--cert-dir={d}", f"--tls-cert-file={d}/apiserver.crt", f"--tls-private-key-file={d}/apiserver.key",
        f"--client-ca-file={d}/ca.crt", f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction",
        "--allow-privileged=true",
        "--service-account-issuer=https://kubernetes.default.svc", f"--service-account-key-file={d}/sa.pub",
        f"--service-account-signing-key-file={d}/sa.key",
        f"--kubelet-client-certificate={d}/apiserver-kubelet-client.crt",
        f"--kubelet-client-key={d}/apiserver-kubelet-client.key",
        f"--kubelet-certificate-authority={d}/ca.crt",
        "--kubelet-preferred-address-types=InternalIP", "--profiling=false", "--event-ttl=30m",
    ])
    wait_for(lambda: api_ready(d), "kube-apiserver", 90, ("etcd", "kube-apiserver"))
    cfg = containerd_config(cni)
    start("containerd", ["containerd", "--config", str(cfg)])
    wait_for(lambda: ctr("version"), "containerd", 30, ("containerd",))
    imported = import_images()
    log(f"images in containerd: {', '.join(sorted(imported))}")
    start("kube-controller-manager", [
        str(k8s / "kube-controller-manager"), f"--kubeconfig={STATE}/controller-manager.kubeconfig",
        f"--authentication-kubeconfig={STATE}/controller-manager.kubeconfig",
        f"--authorization-kubeconfig={STATE}/controller-manager.kubeconfig",
        "--bind-address=127.0.0.1", "--secure-port=10257", "--leader-elect=false",
        "--use-service-account-credentials=true", f"--service-account-private-key-file={d}/sa.key",
        f"--root-ca-file={d}/ca.crt", f"--cluster-signing-cert-file={d}/ca.crt",
        f"--cluster-signing-key-file={d}/ca.key", f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--allocate-node-cidrs=false", "--controllers=*,-nodeipam,-cloud-node-lifecycle",
        f"--cert-dir={STATE}/controller-manager-certs",
    ])
    start("kube-scheduler", [
        str(k8s / "kube-scheduler"), f"--kubeconfig={STATE}/scheduler.kubeconfig",
        f"--authentication-kubeconfig={STATE}/scheduler.kubeconfig",
        f"--authorization-kubeconfig={STATE}/scheduler.kubeconfig",
        "--bind-address=127.0.0.1", "--secure-port=10259", "--leader-elect=false",
        f"--cert-dir={STATE}/scheduler-certs",
    ])
    start("kube-proxy", [str(k8s / "kube-proxy"), f"--config={kube_proxy_config()}"])
    start("kubelet", [
        str(k8s / "kubelet"), f"--config={kubelet_config(d)}", f"--kubeconfig={STATE}/kubelet.kubeconfig",
        f"--root-dir={STATE}/kubelet", f"--cert-dir={STATE}/kubelet-certs", f"--node-ip={NODE_IP}",
        f"--hostname-override={NODE}",
    ])
    remaining = max(30.0, timeout - (time.monotonic() - t0))
    wait_for(node_ready, f"node {NODE} Ready", remaining, tuple(COMPONENTS))
    wait_for(lambda: kubectl("get", "serviceaccount", "default", "-n", "default", check=False),
             "the default ServiceAccount", 60, tuple(COMPONENTS))
    log(f"up in {time.monotonic() - t0:.1f} s; export KUBECONFIG={STATE / 'admin.kubeconfig'}")
    (STATE / "up").write_text(json.dumps({"kubeconfig": str(STATE / "admin.kubeconfig"), "images": imported}))


def kubectl(*args: str, check: bool = True) -> str:
    k8s = CACHE / "k8s" / K8S_VERSION
    out = subprocess.run([str(k8s / "kubectl"), f"--kubeconfig={STATE / 'admin.kubeconfig'}", *args],
                         capture_output=True, text=True, check=check, timeout=60)
    return out.stdout.strip()


def node_ready() -> bool:
    out = kubectl("get", "node", NODE, "-o", "jsonpath={.status.conditions[?(@.type=='Ready')].status}",
                  check=False)
    return out == "True"


# -- down -------------------------------------------------------------------------------------------


def our_pids(marker: str) -> list[int]:
    """Processes whose command line names `marker` (a path under our state directory)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if marker in proc.joinpath("cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


def kill_containers() -> None:
    sock = STATE / "containerd" / "containerd.sock"
    if alive("containerd") and sock.exists():
        for task in ctr("tasks", "ls", "-q", check=False).split():
            ctr("tasks", "kill", "-s", "SIGKILL", task, check=False)
    # The shims outlive containerd; each names our socket on its command line.
    for pid in our_pids(str(sock)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    # Container processes whose shim died are children of init now: find them by cgroup.
    for pid in pids_in_kubepods():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def kubepods_dirs() -> list[Path]:
    return [Path("/sys/fs/cgroup") / c / "kubepods" for c in CGROUP_CONTROLLERS
            if (Path("/sys/fs/cgroup") / c / "kubepods").is_dir()]


def pids_in_kubepods() -> set[int]:
    pids: set[int] = set()
    for root in kubepods_dirs():
        for procs in root.rglob("cgroup.procs"):
            with contextlib.suppress(OSError, ValueError):
                pids |= {int(p) for p in procs.read_text().split()}
    return pids


def unmount_under(path: Path) -> None:
    mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    for target in sorted({m for m in mounts if m.startswith(str(path))}, key=len, reverse=True):
        subprocess.run(["umount", "-l", target], capture_output=True)


def pod_netns() -> list[Path]:
    """The pod network namespaces containerd pinned (their sandboxes' specs name them): from every
    container containerd knows, and from the task state of those that run."""
    out: list[Path] = []
    if alive("containerd"):
        for cid in ctr("containers", "ls", "-q", check=False).split():
            with contextlib.suppress(ValueError, KeyError, TypeError):
                info = json.loads(ctr("containers", "info", cid, check=False) or "{}")
                for ns in info["Spec"]["linux"]["namespaces"]:
                    if ns["type"] == "network" and ns.get("path", "").startswith("/var/run/netns/cni-"):
                        out.append(Path(ns["path"]))
    base = STATE / "containerd" / "state" / "io.containerd.runtime.v2.task" / "k8s.io"
    for config in base.glob("*/config.json"):
        with contextlib.suppress(OSError, ValueError, KeyError):
            for ns in json.loads(config.read_text())["linux"]["namespaces"]:
                if ns["type"] == "network" and ns.get("path", "").startswith("/var/run/netns/cni-"):
                    out.append(Path(ns["path"]))
    return out


def down() -> None:
    pods_ns = pod_netns()
    stop("kubelet", "kube-proxy", "kube-scheduler", "kube-controller-manager")
    kill_containers()
    # A container that containerd was still starting shows up late: kill until the pod cgroups are empty.
    deadline = time.monotonic() + 20
    while (late := pids_in_kubepods()) and time.monotonic() < deadline:
        for pid in late:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
    stop("containerd")
    stop("kube-apiserver")  # before etcd: an API server that loses etcd while stopping waits 15 s
    stop("etcd")
    unmount_under(STATE)
    for ns in sorted(set(pods_ns)):
        subprocess.run(["umount", str(ns)], capture_output=True)
        ns.unlink(missing_ok=True)
    # Empty pod cgroups, deepest first (rmdir of a cgroup with no process removes it).
    for root in kubepods_dirs():
        for d in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):
                d.rmdir()
        with contextlib.suppress(OSError):
            root.rmdir()
    network_down()
    (STATE / "up").unlink(missing_ok=True)
    log("down")


def destroy() -> None:
    down()
    shutil.rmtree(STATE, ignore_errors=True)


def status() -> int:
    bad = 0
    for name in COMPONENTS:
        ok = alive(name)
        bad += not ok
        print(f"{name:26} {'running' if ok else 'stopped'}")
    if not bad:
        print(kubectl("get", "nodes", "-o", "wide", check=False))
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/cluster", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["up", "down", "destroy", "status", "env"])
    args = parser.parse_args(argv)
    if args.command == "up":
        up()
        print(f"export KUBECONFIG={STATE / 'admin.kubeconfig'} PATH={CACHE / 'k8s' / K8S_VERSION}:$PATH")
    elif args.command == "down":
        down()
    elif args.command == "destroy":
        destroy()
    elif args.command == "status":
        return status()
    else:
        print(f"export KUBECONFIG={STATE / 'admin.kubeconfig'} PATH={CACHE / 'k8s' / K8S_VERSION}:$PATH")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
