# agentmesh/etcd: Debian's etcd (package etcd-server) with exactly the shared libraries
# `ldd /usr/bin/etcd` names, each at the path ldd gives (the dynamic loader among them).
#
# Built by scripts/images.sh (`make images`) from a staging directory. FROM scratch, so
# nothing is pulled. There is no mkdir in scratch: the data directory is an empty
# directory of the staging dir (data/etcd, mode 0700 as etcd wants it), copied with the
# non-root user as its owner; /var/lib itself comes from rootfs/, owned by root.
FROM scratch
COPY rootfs/ /
COPY --chown=65532:65532 data/ /var/lib/
# etcd reads ETCD_<FLAG> variables as flags; a --data-dir flag wins over this default.
ENV PATH=/usr/local/bin \
    ETCD_DATA_DIR=/var/lib/etcd
USER 65532:65532
# 2379: clients; 2380: peers.
EXPOSE 2379 2380
ENTRYPOINT ["/usr/local/bin/etcd"]
ARG VERSION
ARG REVISION
ARG SOURCE
ARG LICENSES
ARG DEBIAN_PACKAGE
LABEL org.opencontainers.image.title="agentmesh etcd" \
      org.opencontainers.image.description="etcd from Debian's ${DEBIAN_PACKAGE}, for agentmesh's cluster mode" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="${LICENSES}"
