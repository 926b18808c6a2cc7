"""Fixtures: a mock provider and a Ferry gateway on free ports, stopped by PID afterwards."""

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request

import pytest

ADMIN_KEY = "sdk-admin-key"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"port {port} never opened")


class Gateway:
    def __init__(self, port, admin_port, mock_port):
        self.port = port
        self.admin_port = admin_port
        self.mock_url = f"http://127.0.0.1:{mock_port}"

    def admin(self, method, path, body):
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.admin_port}/apisix/admin{path}",
            data=json.dumps(body).encode(),
            method=method,
            headers={"X-API-KEY": ADMIN_KEY},
        )
        with urllib.request.urlopen(req) as r:
            return json.load(r)

    def upstream_requests(self):
        with urllib.request.urlopen(f"{self.mock_url}/_mock/requests") as r:
            return json.load(r)

    @property
    def root_url(self):
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self):
        return f"http://127.0.0.1:{self.port}/v1"


@pytest.fixture(scope="session")
def gateway():
    work = tempfile.mkdtemp(prefix="ferry-sdk-")
    mock_port, port, admin_port = free_port(), free_port(), free_port()
    procs = []
    try:
        mock = subprocess.Popen(
            [os.environ["FERRY_MOCK_BIN"], "--listen", f"127.0.0.1:{mock_port}", "--key", "token", "--record"],
            stderr=subprocess.DEVNULL,
        )
        procs.append(mock)
        wait_port(mock_port, mock)
        with open(os.path.join(work, "config.yaml"), "w") as f:
            f.write(
                "plugin_attr:\n  prometheus:\n    enable_export_server: false\n"
                f"apisix:\n  node_listen: [{{ip: 127.0.0.1, port: {port}}}]\n  ssl:\n    enable: false\n"
                f"deployment:\n  admin:\n    admin_key: [{{name: admin, key: {ADMIN_KEY}, role: admin}}]\n"
                f"    admin_listen: {{ip: 127.0.0.1, port: {admin_port}}}\n"
            )
        ferry = subprocess.Popen(
            [os.environ["FERRY_BIN"], "serve", "--config", "config.yaml"], cwd=work, stderr=subprocess.DEVNULL
        )
        procs.append(ferry)
        wait_port(port, ferry)
        wait_port(admin_port, ferry)
        gw = Gateway(port, admin_port, mock_port)
        gw.admin(
            "PUT",
            "/routes",
            {
                "id": "sdk",
                "uri": "/v1/*",
                "plugins": {
                    "ai-proxy": {
                        "provider": "openai",
                        "auth": {"header": {"Authorization": "Bearer token"}},
                        "override": {"endpoint": gw.mock_url},
                    }
                },
            },
        )
        gw.admin(
            "PUT",
            "/routes",
            {
                "id": "sdk-anthropic-client",
                "uri": "/v1/messages",
                "plugins": {
                    "ai-proxy": {
                        "provider": "openai",
                        "auth": {"header": {"Authorization": "Bearer token"}},
                        "override": {"endpoint": gw.mock_url},
                    }
                },
            },
        )
        gw.admin(
            "PUT",
            "/routes",
            {
                "id": "sdk-anthropic-provider",
                "uri": "/anthropic/*",
                "plugins": {
                    "ai-proxy": {
                        "provider": "anthropic",
                        "auth": {"header": {"x-api-key": "token"}},
                        "options": {"model": "claude-sonnet-4-20250514"},
                        "override": {"endpoint": gw.mock_url},
                    }
                },
            },
        )
        # Gemini-native clients (google-genai) on the OpenAI mock.
        gw.admin(
            "PUT",
            "/routes",
            {
                "id": "sdk-gemini",
                "uri": "/gemini/*",
                "plugins": {
                    "ai-proxy": {
                        "provider": "openai",
                        "auth": {"header": {"Authorization": "Bearer token"}},
                        "override": {"endpoint": gw.mock_url + "/v1/chat/completions"},
                    }
                },
            },
        )

        def instance(name, model, priority, **faults):
            headers = {"Authorization": "Bearer token", **faults}
            return {
                "name": name,
                "provider": "openai",
                "weight": 1,
                "priority": priority,
                "auth": {"header": headers},
                "options": {"model": model},
                "override": {"endpoint": gw.mock_url},
            }

        # ai-proxy-multi: the first instance answers 503, the second serves.
        gw.admin(
            "PUT",
            "/routes",
            {
                "id": "sdk-multi",
                "uri": "/multi/v1/*",
                "plugins": {
                    "ai-proxy-multi": {
                        "instances": [
                            instance("broken", "broken-model", 1, **{"x-mock-status": "503"}),
                            instance("healthy", "healthy-model", 0),
                        ],
                        "fallback_strategy": ["http_5xx"],
                    }
                },
            },
        )
        # ai-proxy-multi: the first instance breaks its stream after two events.
        gw.admin(
            "PUT",
            "/routes",
            {
                "id": "sdk-multi-cut",
                "uri": "/multicut/v1/*",
                "plugins": {
                    "ai-proxy-multi": {
                        "instances": [
                            instance(
                                "cut",
                                "cut-model",
                                1,
                                **{"x-mock-reset-after": "2", "x-mock-chunks": "6", "x-mock-chunk-delay-ms": "20"},
                            ),
                            instance("spare", "spare-model", 0),
                        ],
                        "fallback_strategy": ["http_5xx"],
                    }
                },
            },
        )
        yield gw
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)
