# A NATS server image built here, FROM scratch, holding a static nats-server
# built from the module version in go.mod: for the container tests and for
# machines with no registry. Elsewhere the public nats image does the same.
FROM scratch
ARG VERSION=unknown
LABEL org.opencontainers.image.title="nats-server (for mfa-worker tests)" \
      org.opencontainers.image.version="${VERSION}"
COPY nats-server /nats-server
EXPOSE 4222 6222 8222
ENTRYPOINT ["/nats-server"]
CMD ["--jetstream", "--store_dir", "/data", "--http_port", "8222"]
