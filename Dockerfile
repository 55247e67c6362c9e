# One image holding every Mizzen binary: the operator (manager) and the mesh
# programs under cmd/ (pilot, proxy, injector). Static, non-root, nothing else.
#
#   docker build --build-arg VERSION=0.1.0 -t ghcr.io/mizzen-mesh/mizzen:0.1.0 .
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=""
ARG TARGETOS=linux
ARG TARGETARCH=amd64
RUN GOOS=$TARGETOS GOARCH=$TARGETARCH VERSION=$VERSION hack/build-binaries.sh /out

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/ /usr/local/bin/
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/manager"]
