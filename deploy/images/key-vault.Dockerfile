# key-vault: the OPAQUE key vault (file sealing; PKCS#11 is not in the image).
# TLS material, the authority's public key and the sealing key come from a
# read-only mount at /run/e2eb (deploy/compose/secrets.sh makes them).
ARG BASE=scratch
FROM ${BASE}
COPY rootfs/ /
COPY --chown=10001:10001 data/ /var/lib/key-vault/
ENV KEY_VAULT_LISTEN=0.0.0.0:50062 \
    KEY_VAULT_DB=/var/lib/key-vault/vault.db \
    KEY_VAULT_SEALING_KEY_FILE=/run/e2eb/vault/sealing.key \
    E2EB_TOKEN_PUBLIC_KEY_FILE=/run/e2eb/authority/token.pub \
    E2EB_TLS_CA_FILE=/run/e2eb/tls/ca.pem \
    TLS_CERT_FILE=/run/e2eb/tls/key-vault.pem \
    TLS_KEY_FILE=/run/e2eb/tls/key-vault.key
USER 10001:10001
VOLUME /var/lib/key-vault
EXPOSE 50062
HEALTHCHECK --interval=2s --timeout=5s --retries=30 \
  CMD ["/usr/local/bin/health-probe", "--endpoint", "https://localhost:50062", "--service", "e2ebackup.vault.v2.KeyVault", "--wait-secs", "2"]
ENTRYPOINT ["/usr/local/bin/key-vault"]
