# syntax=docker/dockerfile:1
#
# PopBox gateway image: a static binary on distroless, running as non-root.
#
#   docker build -t popbox .                                  # VERSION defaults to "dev"
#   docker build --build-arg VERSION=$(git describe --tags --always --dirty) -t popbox .
#   docker run --rm -p 3001:3001 -e POPBOX_REDIS_URL=redis://redis:6379/0 popbox
#
# deploy/docker-compose.yml runs it with Redis. deploy/deploy_test.go builds
# the binary exactly as below and checks that it is static.

# --- build stage -----------------------------------------------------------
FROM golang:1.26 AS build
WORKDIR /src
# Dependencies first, so that a source change does not download them again.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
# Static (no cgo, no libc), reproducible paths, no symbol tables.
RUN CGO_ENABLED=0 go build -trimpath \
      -ldflags "-s -w -X github.com/popbox/popbox/internal/version.Version=${VERSION}" \
      -o /out/popbox ./cmd/popbox

# --- final stage -----------------------------------------------------------
# distroless/static: CA certificates (callbacks, webhooks, MongoDB over TLS),
# tzdata and /etc/passwd with the nonroot user; no shell, no package manager.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/popbox /popbox
# nonroot (65532:65532), numeric so that runAsNonRoot policies can check it.
USER 65532:65532
# 3001 plain HTTP; 3002 TLS when POPBOX_TLS_CERT and POPBOX_TLS_KEY are set
# (mount the files read-only, e.g. under /certs).
EXPOSE 3001 3002
# No shell or curl in the image: the binary checks itself (GET /healthz).
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["/popbox", "health", "--server", "http://127.0.0.1:3001"]
ENTRYPOINT ["/popbox", "serve"]
