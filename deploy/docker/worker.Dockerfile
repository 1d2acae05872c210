# agentmesh/worker: mesh-worker, one role per container (`--role`, or MESH_ROLE).
#
# Built by scripts/images.sh (`make images`) from a staging directory: the static,
# non-PIE release binary (`make bench-build`), Debian's CA bundle (the model brains
# verify HTTPS APIs against it: SSL_CERT_FILE) and a passwd/group naming the non-root
# user. FROM scratch, so nothing is pulled.
FROM scratch
COPY rootfs/ /
ENV PATH=/usr/local/bin \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/mesh-worker"]
ARG VERSION
ARG REVISION
ARG SOURCE
ARG LICENSES
LABEL org.opencontainers.image.title="agentmesh worker" \
      org.opencontainers.image.description="mesh-worker joins an agentmesh as one role and answers turns with a brain (scripted, openai, anthropic, exec)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="${LICENSES}"
