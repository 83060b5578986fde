# local-s3: S3 over a directory (the stack's stand-in for MinIO). Staged and
# built by deploy/images/build.sh; BASE=scratch ships the host's glibc.
ARG BASE=scratch
FROM ${BASE}
COPY rootfs/ /
COPY --chown=10001:10001 data/ /var/lib/local-s3/
ENV LOCAL_S3_LISTEN=0.0.0.0:9000 \
    LOCAL_S3_DATA_DIR=/var/lib/local-s3
USER 10001:10001
VOLUME /var/lib/local-s3
EXPOSE 9000
ENTRYPOINT ["/usr/local/bin/local-s3"]
