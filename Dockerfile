# Image with both binaries (operator and sidecar). Nothing in the build or
# tests depends on it.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o /out/nodemirror-operator ./cmd/operator && \
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o /out/nodemirror-sidecar ./cmd/sidecar

FROM gcr.io/distroless/static:nonroot
COPY --from=build /out/ /
USER 65532:65532
ENTRYPOINT ["/nodemirror-operator"]
