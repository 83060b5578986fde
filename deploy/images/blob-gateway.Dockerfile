# blob-gateway: encrypted blobs over gRPC into S3. TLS material and the
# authority's public key come from a read-only mount at /run/e2eb.
ARG BASE=scratch
FROM ${BASE}
COPY rootfs/ /
COPY --chown=10001:10001 data/ /var/lib/blob-gateway/
ENV BLOB_GATEWAY_LISTEN=0.0.0.0:50061 \
    S3_ENDPOINT=http://local-s3:9000 \
    E2EB_TOKEN_PUBLIC_KEY_FILE=/run/e2eb/authority/token.pub \
    E2EB_TLS_CA_FILE=/run/e2eb/tls/ca.pem \
    TLS_CERT_FILE=/run/e2eb/tls/blob-gateway.pem \
    TLS_KEY_FILE=/run/e2eb/tls/blob-gateway.key
USER 10001:10001
WORKDIR /var/lib/blob-gateway
EXPOSE 50061
HEALTHCHECK --interval=2s --timeout=5s --retries=30 \
  CMD ["/usr/local/bin/health-probe", "--endpoint", "https://localhost:50061", "--service", "e2ebackup.storage.v2.BlobGateway", "--wait-secs", "2"]
ENTRYPOINT ["/usr/local/bin/blob-gateway"]
