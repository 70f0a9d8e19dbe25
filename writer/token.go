package writer

import (
	"encoding/base64"
	"slices"
	"strings"
	"unsafe"

	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// maxTokenLen bounds what DecodeToken parses (a token from a header).
const maxTokenLen = 4096

// EncodeToken renders a consistency token as unpadded base64url of its
// protobuf encoding (the Meridian-Token header value). The encoding is
// deterministic (map entries sorted by key), written directly with protowire:
// it is on every append's path, and reflection-driven deterministic map
// marshalling cost as much as the rest of the stamping.
func EncodeToken(t *meridianv1.ConsistencyToken) string {
	return encodeToken(t.OriginRegion, t.OriginNode, t.Sequences)
}

func encodeToken(region, node string, seqs map[string]uint64) string {
	var buf [4]zoneSeq
	zs := buf[:0]
	for z, seq := range seqs {
		zs = append(zs, zoneSeq{z, seq})
	}
	return encodeZoneSeqs(nil, region, node, zs)
}

// zoneSeq is one entry of a token's sequences.
type zoneSeq struct {
	zone string
	seq  uint64
}

// tokenRoom is the room for a token in a one-event append's allocation:
// enough for two zones and region and node names of a few dozen
// characters; a longer token gets its own.
const tokenRoom = 128

// encodeZoneSeqs is encodeToken of the entries zs (distinct zones; sorted
// here, in place), written into dst if it fits; dst must not be written
// again.
func encodeZoneSeqs(dst []byte, region, node string, zs []zoneSeq) string {
	var buf [128]byte
	b := buf[:0]
	b = appendString(b, 1, region)
	b = appendString(b, 2, node)
	slices.SortFunc(zs, func(x, y zoneSeq) int { return strings.Compare(x.zone, y.zone) })
	for _, e := range zs {
		z, seq := e.zone, e.seq
		// Map entry: key = 1 (string), value = 2 (uint64).
		n := 1 + protowire.SizeBytes(len(z)) + 1 + protowire.SizeVarint(seq)
		b = protowire.AppendTag(b, 3, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(n))
		b = protowire.AppendTag(b, 1, protowire.BytesType)
		b = protowire.AppendString(b, z)
		b = protowire.AppendTag(b, 2, protowire.VarintType)
		b = protowire.AppendVarint(b, seq)
	}
	// The encoded bytes become the string (never written again), instead
	// of EncodeToString's buffer and its copy.
	n := base64.RawURLEncoding.EncodedLen(len(b))
	out := dst[:0]
	if len(dst) < n {
		out = make([]byte, n)
	}
	out = out[:n]
	base64.RawURLEncoding.Encode(out, b)
	return unsafe.String(unsafe.SliceData(out), len(out))
}

// DecodeToken parses a token made by EncodeToken. Errors are *Error with
// code invalid_argument and field "token".
func DecodeToken(s string) (*meridianv1.ConsistencyToken, error) {
	if s == "" {
		return nil, invalidf("token", "empty consistency token")
	}
	if len(s) > maxTokenLen {
		return nil, invalidf("token", "consistency token longer than %d bytes", maxTokenLen)
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return nil, invalidf("token", "consistency token is not unpadded base64url: %v", err)
	}
	t := &meridianv1.ConsistencyToken{}
	if err := proto.Unmarshal(b, t); err != nil {
		return nil, invalidf("token", "consistency token is not a ConsistencyToken: %v", err)
	}
	if len(t.ProtoReflect().GetUnknown()) > 0 {
		return nil, invalidf("token", "consistency token has unknown fields")
	}
	if t.OriginRegion == "" || t.OriginNode == "" || len(t.Sequences) == 0 {
		return nil, invalidf("token", "consistency token must name origin_region, origin_node and at least one sequence")
	}
	return t, nil
}
