"""
Traefik labels read as Traefik's Docker provider reads them.
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from suite.constellation.docker import Container
from suite.constellation.labels import serviceRecord


def container(labels: dict[str, str], **kw: Any) -> Container:
    kw.setdefault("networkMode", "host")
    return Container(
        "id1", kw.pop("name", "web-1"), labels, kw.pop("running", True), kw.pop("health", "healthy"), **kw
    )


class ServiceRecordTests(SynchronousTestCase):
    """
    L{serviceRecord}.
    """

    def test_defaults(self) -> None:
        """
        No labels: a service named after the container (or its compose
        service) on its only exposed port, with a default router.
        """
        r = serviceRecord(container({}, exposed=("8080/tcp",)), "10.0.0.5")
        self.assertEqual(r["services"], {"web-1": {"url": "http://10.0.0.5:8080", "loadBalancer": {}}})
        self.assertEqual((r["routers"], r["defaultRouters"], r["errors"]), ({}, ["web-1"], []))
        r = serviceRecord(container({"com.docker.compose.service": "web"}, exposed=()), "10.0.0.5")
        self.assertEqual(r["services"], {})
        self.assertIn("0 exposed ports", r["errors"][0])

    def test_labels(self) -> None:
        """
        Router and service labels, any case, with lists, numbers and TLS.
        """
        labels = {
            "traefik.http.routers.web.rule": "Host(`a.example`)",
            "traefik.http.routers.web.entryPoints": "web, websecure",
            "traefik.http.routers.web.middlewares": "auth@file",
            "traefik.http.routers.web.priority": "5",
            "traefik.http.routers.web.tls": "true",
            "traefik.http.routers.web.tls.certresolver": "le",
            "traefik.http.routers.norule.service": "web",
            "traefik.http.services.web.loadbalancer.server.port": "8080",
            "traefik.http.services.web.loadbalancer.server.scheme": "https",
            "traefik.http.services.web.loadBalancer.healthCheck.path": "/health",
            "traefik.http.services.web.loadbalancer.passhostheader": "false",
            "other.label": "x",
        }
        r = serviceRecord(container(labels, health="unhealthy"), "10.0.0.5")
        self.assertFalse(r["healthy"])
        self.assertEqual(
            r["routers"],
            {
                "web": {
                    "rule": "Host(`a.example`)",
                    "entryPoints": ["web", "websecure"],
                    "middlewares": ["auth@file"],
                    "priority": 5,
                    "tls": {"certResolver": "le"},
                    "service": "web",
                }
            },
        )
        self.assertEqual(
            r["services"]["web"],
            {
                "url": "https://10.0.0.5:8080",
                "loadBalancer": {"passHostHeader": False, "healthCheck": {"path": "/health"}},
            },
        )
        self.assertEqual(r["errors"], ["router norule: no rule"])
        self.assertEqual(r["defaultRouters"], [])

    def test_addresses(self) -> None:
        """
        Host network and published ports use the node's address; otherwise
        the container's IP on traefik.docker.network or its first network;
        no address is an error; traefik.enable=false routes nothing.
        """
        port = {"traefik.http.services.s.loadbalancer.server.port": "80"}
        published = container(
            port, networkMode="bridge", published={"80/tcp": 8080}, networks={"b": "172.17.0.2"}
        )
        self.assertEqual(serviceRecord(published, "fd00::1")["services"]["s"]["url"], "http://[fd00::1]:8080")
        bridged = container(
            {**port, "traefik.docker.network": "front"},
            networkMode="backend",
            networks={"a": "172.18.0.2", "front": "172.19.0.2"},
        )
        self.assertEqual(serviceRecord(bridged, "10.0.0.5")["services"]["s"]["url"], "http://172.19.0.2:80")
        alone = container(port, networkMode="none")
        self.assertIn("no address", serviceRecord(alone, "10.0.0.5")["errors"][0])
        off = serviceRecord(container({**port, "traefik.enable": "false"}), "10.0.0.5")
        self.assertEqual((off["services"], off["routers"], off["defaultRouters"]), ({}, {}, []))
        dead = serviceRecord(container(port, running=False), "10.0.0.5")
        self.assertEqual((dead["healthy"], dead["health"]), (False, "exited"))
