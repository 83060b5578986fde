# etcd: Debian's etcd-server binary (/usr/bin/etcd), configured by ETCD_*
# variables (compose sets the cluster's names and URLs).
ARG BASE=scratch
FROM ${BASE}
COPY rootfs/ /
COPY --chown=10001:10001 data/ /var/lib/etcd/
ENV ETCD_DATA_DIR=/var/lib/etcd/data \
    ETCD_LISTEN_CLIENT_URLS=http://0.0.0.0:2379 \
    ETCD_LISTEN_PEER_URLS=http://0.0.0.0:2380
USER 10001:10001
VOLUME /var/lib/etcd
EXPOSE 2379 2380
HEALTHCHECK --interval=2s --timeout=5s --retries=30 \
  CMD ["/usr/local/bin/health-probe", "--insecure-plaintext", "--endpoint", "http://localhost:2379", "--wait-secs", "2"]
ENTRYPOINT ["/usr/bin/etcd"]
