#!/usr/bin/env bash
# Regenerates the Go code beside every .proto file under proto/.
# Needs protoc (Debian: protobuf-compiler) and protoc-gen-go (pinned by go.mod).
set -euo pipefail
cd "$(dirname "$0")/.."
PATH="$(go env GOPATH)/bin:$PATH"
if ! command -v protoc-gen-go >/dev/null || [ "$(protoc-gen-go --version 2>/dev/null)" != "protoc-gen-go $(go list -m -f '{{.Version}}' google.golang.org/protobuf)" ]; then
  go install google.golang.org/protobuf/cmd/protoc-gen-go
fi
protoc -I proto --go_out=proto --go_opt=paths=source_relative $(find proto -name '*.proto' | sort)
