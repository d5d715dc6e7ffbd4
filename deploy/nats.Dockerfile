# A NATS server image built here, FROM scratch: a static nats-server built
# from the module version in go.mod, for compose, the container tests and
# machines with no registry. It also holds the worker binary, only as the
# health probe of compose (`/worker health http://127.0.0.1:8222/healthz`):
# the image has no shell and no curl. Built by `make image-nats`.
FROM scratch
ARG VERSION=unknown
LABEL org.opencontainers.image.title="nats-server (for mfa-worker)" \
      org.opencontainers.image.version="${VERSION}"
COPY nats-server /nats-server
COPY worker /worker
EXPOSE 4222 6222 8222
ENTRYPOINT ["/nats-server"]
CMD ["--jetstream", "--store_dir", "/data", "--http_port", "8222"]
