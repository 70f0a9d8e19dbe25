// Package proto holds meridian's schemas. The Go code generated from them
// lives in proto/meridian/v1 (package meridianv1); regenerate it with
// scripts/genproto.sh after any change to a .proto file.
package proto
