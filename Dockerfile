# Container images of the suite, one build target per daemon family (docs/containers.md):
#   docker build -t spacecomms:latest .                       (the last target: SpaceComms)
#   docker build --target goop -t goop2 .
#   docker build --target specter -t specter .
#   docker build --target constellation -t constellation-agent .
#   docker build --target ceptra -t ceptra .                  (ceptra and clustor-cp)
# Every image: the suite's wheel in /opt/suite/venv on Debian's python3, a non-root user
# (uid 10001), no shell needed at run time, a read-only root filesystem at run time
# (`docker run --read-only --tmpfs /tmp`), HEALTHCHECK on the daemon's own health endpoint.
# BASE can name any Debian-based image with python3 (3.11+) and python3-venv, e.g. one made
# offline from Debian packages and loaded with `docker import`.
ARG BASE=debian:bookworm-slim

FROM ${BASE} AS build
RUN if ! python3 -c "import venv, ensurepip" 2>/dev/null; then \
      apt-get update && apt-get install -y --no-install-recommends python3 python3-venv \
      && rm -rf /var/lib/apt/lists/*; fi
COPY . /src
RUN python3 -m venv /opt/suite/venv \
    && /opt/suite/venv/bin/pip install --no-cache-dir /src \
    && /opt/suite/venv/bin/python -c "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))" \
    && /opt/suite/venv/bin/pip uninstall -y pip \
    && find /opt/suite/venv -name "*.pyc" -path "*/tests/*" -delete

FROM ${BASE} AS runtime
RUN if ! command -v python3 >/dev/null; then \
      apt-get update && apt-get install -y --no-install-recommends python3 ca-certificates \
      && rm -rf /var/lib/apt/lists/*; fi \
    && (getent group suite || groupadd --system --gid 10001 suite) \
    && (getent passwd suite || useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent \
        --shell /usr/sbin/nologin suite)
COPY --from=build /opt/suite/venv /opt/suite/venv
COPY containers/healthcheck.py /opt/suite/healthcheck.py
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
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["/opt/suite/venv/bin/python", "/opt/suite/healthcheck.py"]
ENTRYPOINT ["/opt/suite/venv/bin/goop2"]
CMD ["rendezvous", "/data"]

FROM runtime AS specter
# SIGTERM hands every vnode's keys on before exit: give the container 120 s to stop.
ENV HEALTH_URL=http://127.0.0.1:9999/healthz
STOPSIGNAL SIGTERM
VOLUME /var/lib/specter
EXPOSE 8080 8443 7946
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["/opt/suite/venv/bin/python", "/opt/suite/healthcheck.py"]
ENTRYPOINT ["/opt/suite/venv/bin/specter"]
CMD ["server", "--data", "/var/lib/specter", "--listen-internal", "tcp://127.0.0.1:9999"]

FROM runtime AS constellation
ENV HEALTH_URL=http://127.0.0.1:8081/healthz CONSTELLATION_HTTP_PROVIDER=tcp:8081:interface=0.0.0.0 \
    DATA_DIR=/opt/constellation/data
VOLUME /opt/constellation/data
EXPOSE 8081 7946
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["/opt/suite/venv/bin/python", "/opt/suite/healthcheck.py"]
ENTRYPOINT ["/opt/suite/venv/bin/constellation-agent"]

FROM runtime AS ceptra
# ceptra and clustor-cp: `docker run ... ceptra` (default) or `--entrypoint clustor-cp`.
ENV HEALTH_URL=http://127.0.0.1:26020/healthz
EXPOSE 26020 26021
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["/opt/suite/venv/bin/python", "/opt/suite/healthcheck.py"]
ENTRYPOINT ["/opt/suite/venv/bin/ceptra"]

FROM runtime AS spacecomms
# The guide's `docker run ... spacecomms:latest start --config /etc/spacecomms/config.yaml`.
ENV HEALTH_URL=http://127.0.0.1:8080/health
VOLUME /var/lib/spacecomms
EXPOSE 8080 8443
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["/opt/suite/venv/bin/python", "/opt/suite/healthcheck.py"]
ENTRYPOINT ["/opt/suite/venv/bin/spacecomms"]
CMD ["start", "--config", "/etc/spacecomms/config.yaml"]
