# device-sim: simulated phones (and mint-token). It plays the account
# authority: its secret key and the CA come from a read-only mount at /run/e2eb.
ARG BASE=scratch
FROM ${BASE}
COPY rootfs/ /
COPY --chown=10001:10001 data/ /var/lib/device-sim/
ENV DEVICE_SIM_WORK_DIR=/var/lib/device-sim/sim \
    DEVICE_SIM_REPORT_DIR=/var/lib/device-sim/fleet \
    E2EB_AUTHORITY_KEY_FILE=/run/e2eb/authority/token.key \
    E2EB_TLS_CA_FILE=/run/e2eb/tls/ca.pem \
    BLOB_GATEWAY_ENDPOINT=https://blob-gateway:50061 \
    KEY_VAULT_ENDPOINT=https://key-vault:50062 \
    S3_ENDPOINT=http://local-s3:9000
USER 10001:10001
WORKDIR /var/lib/device-sim
VOLUME /var/lib/device-sim
ENTRYPOINT ["/usr/local/bin/device-sim"]
