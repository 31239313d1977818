# Container images of the suite, one build target per daemon family (docs/containers.md):
#   docker build -t spacecomms:latest .                       (the last target: SpaceComms)
#   docker build --target goop -t goop2 .
#   docker build --target specter -t specter .
#   docker build --target constellation -t constellation-agent .
#   docker build --target ceptra -t ceptra .                  (ceptra and clustor-cp)
# `make images` builds them all offline: the base from Debian's packages (`make base-image`,
# BASE=suite-base:local) and every Python dependency as a wheel built on the host
# (`make wheelhouse`, containers/wheels/), so nothing is fetched during the build.
# Without containers/wheels/ the build installs from the package index instead.
# Every image: the suite in /opt/suite/venv on Debian's python3, user `suite` (uid/gid 10001),
# works with a read-only root filesystem (`docker run --read-only --tmpfs /tmp`), HEALTHCHECK
# on the daemon's own health endpoint ($HEALTH_URL) through a Python probe (no curl, no shell).
# Only classic-builder instructions are used (DOCKER_BUILDKIT=0 works as well as BuildKit).
ARG BASE=debian:bookworm-slim

# The base with Debian's python3 (apt when the base lacks it) and the suite's user.
FROM ${BASE} AS python
RUN if ! command -v python3 >/dev/null; then \
      apt-get update && apt-get install -y --no-install-recommends python3 ca-certificates \
      && rm -rf /var/lib/apt/lists/*; fi \
    && (grep -q '^suite:' /etc/group || echo 'suite:x:10001:' >> /etc/group) \
    && (grep -q '^suite:' /etc/passwd \
        || echo 'suite:x:10001:10001:suite:/nonexistent:/usr/sbin/nologin' >> /etc/passwd)

# The venv (less Twisted's own test suites), the probe, and the data directories (owned by the suite's user, so that named
# volumes mounted there start writable), staged under /stage for one COPY.
FROM python AS build
COPY . /src
RUN set -e; \
    if ls /src/containers/wheels/pip-*.whl >/dev/null 2>&1; then \
      python3 -m venv --without-pip /opt/suite/venv; \
      pip=$(ls /src/containers/wheels/pip-*.whl | head -n 1); \
      /opt/suite/venv/bin/python "$pip/pip" install --quiet --no-cache-dir --no-index \
        --find-links /src/containers/wheels twisted-suite; \
    else \
      python3 -c "import ensurepip" 2>/dev/null || { apt-get update \
        && apt-get install -y --no-install-recommends python3-venv; }; \
      python3 -m venv /opt/suite/venv; \
      /opt/suite/venv/bin/pip install --quiet --no-cache-dir /src; \
      /opt/suite/venv/bin/pip uninstall --quiet -y pip; \
    fi; \
    rm -rf /opt/suite/venv/lib/python3*/site-packages/twisted/test \
      /opt/suite/venv/lib/python3*/site-packages/twisted/*/test; \
    /opt/suite/venv/bin/python -c "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))"; \
    cp /src/containers/healthcheck.py /opt/suite/healthcheck.py; \
    /opt/suite/venv/bin/python -m compileall -q /opt/suite/healthcheck.py; \
    mkdir -p /stage/opt /stage/data /stage/var/lib/specter /stage/var/lib/spacecomms \
      /stage/var/lib/ceptra /stage/opt/constellation/data /stage/opt/goop/shared /stage/etc/spacecomms; \
    for d in /stage/data /stage/var/lib/specter /stage/var/lib/spacecomms /stage/var/lib/ceptra \
      /stage/opt/constellation/data /stage/opt/goop/shared; do chown 10001:10001 "$d"; chmod 0750 "$d"; done; \
    mv /opt/suite /stage/opt/suite

FROM python AS runtime
COPY --from=build /stage/ /
ENV PATH=/opt/suite/venv/bin:/usr/sbin:/usr/bin:/sbin:/bin PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
USER 10001:10001

FROM runtime AS goop
# A hub: `docker run ... goop2 rendezvous /data` with /data/goop.json; a peer: `goop2 peer /data`.
# The hub binds 127.0.0.1 only (see docs/goop.md): publish it through a proxy in the same network
# namespace, or use the compose example.
ENV HEALTH_URL=http://127.0.0.1:8787/healthz
WORKDIR /data
VOLUME /data
EXPOSE 8787
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
  CMD ["/opt/suite/venv/bin/python", "-I", "-S", "/opt/suite/healthcheck.py"]
ENTRYPOINT ["/opt/suite/venv/bin/goop2"]
CMD ["rendezvous", "/data"]

FROM runtime AS specter
# SIGTERM hands every vnode's keys on before exit: give the container 120 s to stop.
ENV HEALTH_URL=http://127.0.0.1:9999/healthz
STOPSIGNAL SIGTERM
VOLUME /var/lib/specter
EXPOSE 8080 8443 7946
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
  CMD ["/opt/suite/venv/bin/python", "-I", "-S", "/opt/suite/healthcheck.py"]
ENTRYPOINT ["/opt/suite/venv/bin/specter"]
CMD ["server", "--data", "/var/lib/specter", "--listen-internal", "tcp://127.0.0.1:9999"]

FROM runtime AS constellation
ENV HEALTH_URL=http://127.0.0.1:8081/healthz CONSTELLATION_HTTP_PROVIDER=tcp:8081:interface=0.0.0.0 \
    DATA_DIR=/opt/constellation/data
VOLUME /opt/constellation/data
EXPOSE 8081 7946
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
  CMD ["/opt/suite/venv/bin/python", "-I", "-S", "/opt/suite/healthcheck.py"]
ENTRYPOINT ["/opt/suite/venv/bin/constellation-agent"]

FROM runtime AS ceptra
# ceptra and clustor-cp: `docker run ... ceptra` (default) or `--entrypoint clustor-cp`.
# The admin listener is mTLS by default: the probe presents the node's own identity
# (CEPTRA_TLS_IDENTITY_*; for clustor-cp, CLUSTOR_CP_TLS_IDENTITY_*; or HEALTH_TLS_*).
ENV HEALTH_URL=https://127.0.0.1:26020/healthz CEPTRA_DATA_DIR=/var/lib/ceptra
VOLUME /var/lib/ceptra
EXPOSE 26020 26021
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
  CMD ["/opt/suite/venv/bin/python", "-I", "-S", "/opt/suite/healthcheck.py"]
ENTRYPOINT ["/opt/suite/venv/bin/ceptra"]

FROM runtime AS spacecomms
# The guide's `docker run ... spacecomms:latest start --config /etc/spacecomms/config.yaml`.
ENV HEALTH_URL=http://127.0.0.1:8080/health
VOLUME /var/lib/spacecomms
EXPOSE 8080 8443
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
  CMD ["/opt/suite/venv/bin/python", "-I", "-S", "/opt/suite/healthcheck.py"]
ENTRYPOINT ["/opt/suite/venv/bin/spacecomms"]
CMD ["start", "--config", "/etc/spacecomms/config.yaml"]
