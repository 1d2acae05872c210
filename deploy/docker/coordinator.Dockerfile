# agentmesh/coordinator: mesh-coordinator, with meshctl beside it so that
# `docker exec <container> meshctl ...` (or `kubectl exec`) talks to the coordinator
# on its own loopback port.
#
# Built by scripts/images.sh (`make images`) from a staging directory that holds only
# what is copied below: the static, non-PIE release binaries (`make bench-build`),
# Debian's CA bundle and a passwd/group naming the non-root user. FROM scratch, so
# nothing is pulled: no registry is needed.
FROM scratch
COPY rootfs/ /
# Inside a container the coordinator must listen on every interface; flags still win.
ENV PATH=/usr/local/bin \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    MESH_LISTEN=0.0.0.0:7700 \
    MESH_HTTP=0.0.0.0:7780
USER 65532:65532
# 7700: gRPC (worker streams, session API, health, reflection); 7780: HTTP (probes,
# metrics, dashboard, JSON API).
EXPOSE 7700 7780
ENTRYPOINT ["/usr/local/bin/mesh-coordinator"]
ARG VERSION
ARG REVISION
ARG SOURCE
ARG LICENSES
LABEL org.opencontainers.image.title="agentmesh coordinator" \
      org.opencontainers.image.description="mesh-coordinator runs negotiation sessions between agentmesh workers; meshctl is included" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="${LICENSES}"
