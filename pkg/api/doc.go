// Package api holds the wire types of the control-plane API (protobuf and
// gRPC, generated from proto/hms.proto), shared by the agent, the control
// plane and the CLI. It has no logic.
package api

// The plugins are go.mod tools (pinned); protoc is Debian's
// protobuf-compiler (3.21), so the output is reproducible.
//go:generate go build -o ../../.tmp/protoc-bin/ google.golang.org/protobuf/cmd/protoc-gen-go google.golang.org/grpc/cmd/protoc-gen-go-grpc
//go:generate sh -c "PATH=../../.tmp/protoc-bin:$PATH protoc -I proto --go_out=. --go_opt=paths=source_relative --go-grpc_out=. --go-grpc_opt=paths=source_relative hms.proto"
