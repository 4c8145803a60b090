"""A real Kubernetes API server on loopback: kube-apiserver and etcd, built from their Go
modules (scripts/kube.sh puts them in .cache/kube), with TLS, RBAC authorization, the
default admission plugins and bearer tokens. No controller runs: objects are validated,
admitted, authorized, stored and versioned as on a cluster, and nothing acts on them, so a
test plays a controller's part where it needs one (KServe's status, for instance).

Where Go or the binaries are missing, these tests are skipped, except in CI, whose test
command builds the binaries first (scripts/test.sh): there they fail.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest
import yaml
from kubernetes import client

from pipelines.demo.serving_process import free_ports
from tests.support.processes import logged_process

BINARIES = Path(__file__).resolve().parents[2] / ".cache" / "kube"
CUSTOM_RESOURCES = Path(__file__).resolve().parent / "kube-crds"  # installed in every server
ADMIN_TOKEN = "admin-token"  # a member of system:masters, as a cluster's administrator is
START_SECONDS = 60


def require_kube() -> None:
    """Skips (or, in CI, fails) the calling test unless both binaries are built."""
    missing = [name for name in ("etcd", "kube-apiserver") if not (BINARIES / name).exists()]
    if missing:
        message = f"no {' and no '.join(missing)} in {BINARIES} (bash scripts/kube.sh)"
        (pytest.fail if os.environ.get("CI") else pytest.skip)(message)


@dataclass(frozen=True)
class KubeApiServer:
    url: str
    ca_file: Path
    folder: Path

    def api_client(self, token: str = ADMIN_TOKEN) -> client.ApiClient:
        """A `kubernetes` client presenting `token` (default: the administrator's)."""
        configuration = client.Configuration(host=self.url)
        configuration.api_key = {"authorization": f"Bearer {token}"}
        configuration.ssl_ca_cert = str(self.ca_file)
        return client.ApiClient(configuration)

    def service_account_token(self, namespace: str, name: str) -> str:
        """A token of that service account, issued by the API server as to its pods (TokenRequest)."""
        request = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[]))
        core = client.CoreV1Api(self.api_client())
        return core.create_namespaced_service_account_token(name, namespace, request).status.token

    def kubeconfig(self, path: Path, token: str = ADMIN_TOKEN) -> Path:
        path.write_text(f"""apiVersion: v1
kind: Config
clusters: [{{name: loopback, cluster: {{server: "{self.url}", certificate-authority: "{self.ca_file}"}}}}]
users: [{{name: user, user: {{token: "{token}"}}}}]
contexts: [{{name: loopback, context: {{cluster: loopback, user: user}}}}]
current-context: loopback
""")
        return path

    def apply(self, docs: list[dict], dry_run: bool = False) -> subprocess.CompletedProcess:
        """Server-side apply of `docs` (or its dry run: validated and admitted, not stored) as
        the administrator, after making their namespaces, as a cluster's administrator does
        before applying an overlay."""
        for namespace in sorted({doc["metadata"]["namespace"] for doc in docs if "namespace" in doc["metadata"]}):
            if self.kubectl("get", "namespace", namespace).returncode != 0:
                made = self.kubectl("create", "namespace", namespace)
                assert made.returncode == 0, made.stderr
        # Taking over the fields a client changed since (`ct rollout`'s patches), as an
        # administrator re-applying an overlay must say.
        options = ["--force-conflicts", *(["--dry-run=server"] if dry_run else [])]
        return self.kubectl("apply", "--server-side", *options, "-f", "-", stdin=yaml.safe_dump_all(docs))

    def kubectl(self, *arguments: str, stdin: str | None = None) -> subprocess.CompletedProcess:
        """kubectl as the administrator; the result whatever the exit status."""
        kubeconfig = self.kubeconfig(self.folder / "admin.kubeconfig")
        return subprocess.run(
            ["kubectl", f"--kubeconfig={kubeconfig}", f"--cache-dir={self.folder / 'kubectl-cache'}", *arguments],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
        )


@contextlib.contextmanager
def kube_api_server(folder: Path) -> Iterator[KubeApiServer]:
    """Starts etcd and the API server with their state and logs under `folder`."""
    require_kube()
    folder.mkdir(parents=True, exist_ok=True)
    certificates = folder / "certificates"
    certificates.mkdir(exist_ok=True)
    service_account_key = certificates / "service-accounts.key"
    service_account_key.write_bytes(_private_key())
    tokens = folder / "tokens.csv"
    tokens.write_text(f'{ADMIN_TOKEN},admin,admin,"system:masters"\n')
    etcd_port, peer_port, api_port = free_ports(3)
    etcd_url = f"http://127.0.0.1:{etcd_port}"
    peer_url = f"http://127.0.0.1:{peer_port}"
    with contextlib.ExitStack() as stack:
        stack.enter_context(
            logged_process(
                folder / "etcd.log",
                BINARIES / "etcd",
                f"--data-dir={folder / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=default={peer_url}",
                "--unsafe-no-fsync",  # a test's cluster: no durability wanted
            )
        )
        server = stack.enter_context(
            logged_process(
                folder / "kube-apiserver.log",
                BINARIES / "kube-apiserver",
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={api_port}",
                f"--cert-dir={certificates}",  # a self-signed serving certificate, made here
                f"--token-auth-file={tokens}",
                "--authorization-mode=RBAC",
                "--service-cluster-ip-range=10.96.0.0/24",
                "--service-account-issuer=https://kubernetes.default.svc",
                f"--service-account-key-file={service_account_key}",
                f"--service-account-signing-key-file={service_account_key}",
            )
        )
        api = KubeApiServer(f"https://127.0.0.1:{api_port}", certificates / "apiserver.crt", folder)
        _wait_until_ready(api, server, folder / "kube-apiserver.log")
        _install_custom_resources(api)
        yield api


def _wait_until_ready(api: KubeApiServer, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_SECONDS
    request = urllib.request.Request(f"{api.url}/readyz", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"kube-apiserver exited with {server.returncode}: {log.read_text()[-2000:]}")
        if api.ca_file.exists():
            with contextlib.suppress(OSError):
                context = ssl.create_default_context(cafile=str(api.ca_file))
                with urllib.request.urlopen(request, context=context, timeout=2) as response:
                    if response.status == 200:
                        return
        time.sleep(0.2)
    raise RuntimeError(f"kube-apiserver was not ready in {START_SECONDS} s: see {log}")


def _install_custom_resources(api: KubeApiServer) -> None:
    applied = api.kubectl("apply", "-f", str(CUSTOM_RESOURCES))
    assert applied.returncode == 0, applied.stderr
    established = api.kubectl("wait", "--for=condition=Established", "--timeout=30s", "crd", "--all")
    assert established.returncode == 0, established.stderr


def _private_key() -> bytes:
    """An RSA key (PEM), with which the API server signs and checks service-account tokens."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
