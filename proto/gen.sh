#!/usr/bin/env bash
# Regenerates proto/quiltpb from proto/quilt.proto with pinned generators:
# protoc from Debian's protobuf-compiler, protoc-gen-go and
# protoc-gen-go-grpc installed by `go install` at the versions below.
set -euo pipefail
cd "$(dirname "$0")/.."
PROTOC_GEN_GO=google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
PROTOC_GEN_GO_GRPC=google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
command -v protoc >/dev/null || { echo "protoc not found: apt-get install protobuf-compiler" >&2; exit 1; }
export GOBIN=$PWD/.tools/bin
CGO_ENABLED=0 go install "$PROTOC_GEN_GO"
CGO_ENABLED=0 go install "$PROTOC_GEN_GO_GRPC"
PATH=$GOBIN:$PATH protoc -I proto \
  --go_out=proto/quiltpb --go_opt=paths=source_relative \
  --go-grpc_out=proto/quiltpb --go-grpc_opt=paths=source_relative \
  proto/quilt.proto proto/admin.proto
