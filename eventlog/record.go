package eventlog

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
)

// Record is one entry of the log.
type Record struct {
	Seq  uint64
	Data []byte
}

// Key layout. One byte of prefix separates the key spaces, so that each is a
// contiguous range and record keys sort by sequence (8-byte big-endian).
const (
	prefixRecord     = 'r' // 'r' seq(8)      -> record value
	prefixCheckpoint = 'c' // 'c' name        -> seq(8)
	prefixMeta       = 'm' // 'm' name        -> meta value

	recordKeyLen = 1 + 8
)

// Meta keys.
var (
	metaVersion = []byte("mversion") // format version, uint64
	metaFloor   = []byte("mfloor")   // sequence floor, uint64
	metaTrimmed = []byte("mtrimmed") // every seq below it has been trimmed, uint64
)

// formatVersion is the on-disk format written by this package; Open refuses
// anything else.
const formatVersion = 1

// Record value layout: format(1) crc(4) data. The CRC-32C covers the 8-byte
// big-endian sequence and the data, so a value that is damaged, truncated or
// stored under the wrong key fails verification.
const (
	valueFormat    = 1
	valueHeaderLen = 1 + 4
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func recordKey(seq uint64) []byte {
	var k [recordKeyLen]byte
	putRecordKey(k[:], seq)
	return k[:]
}

func putRecordKey(dst []byte, seq uint64) {
	dst[0] = prefixRecord
	binary.BigEndian.PutUint64(dst[1:], seq)
}

// recordKeyUpper is the exclusive upper bound of the record key space.
var recordKeyUpper = []byte{prefixRecord + 1}

func checkpointKey(name string) []byte {
	return append([]byte{prefixCheckpoint}, name...)
}

func recordCRC(seq uint64, data []byte) uint32 {
	var s [8]byte
	binary.BigEndian.PutUint64(s[:], seq)
	return crc32.Update(crc32.Checksum(s[:], castagnoli), castagnoli, data)
}

// putRecordValue encodes data into dst, which is valueHeaderLen+len(data) long.
func putRecordValue(dst []byte, seq uint64, data []byte) {
	dst[0] = valueFormat
	binary.BigEndian.PutUint32(dst[1:5], recordCRC(seq, data))
	copy(dst[valueHeaderLen:], data)
}

// decodeRecord verifies one stored record and returns its sequence and data
// (aliasing value). A key in the record space that is not 9 bytes long is
// reported at expect, the sequence the reader was looking for.
func decodeRecord(key, value []byte, expect uint64) (uint64, []byte, error) {
	if len(key) != recordKeyLen || key[0] != prefixRecord {
		return 0, nil, &CorruptError{Seq: expect, Reason: fmt.Sprintf("malformed key %x", key)}
	}
	seq := binary.BigEndian.Uint64(key[1:])
	if len(value) < valueHeaderLen {
		return seq, nil, &CorruptError{Seq: seq, Reason: fmt.Sprintf("value of %d bytes is shorter than its %d-byte header", len(value), valueHeaderLen)}
	}
	if value[0] != valueFormat {
		return seq, nil, &CorruptError{Seq: seq, Reason: fmt.Sprintf("unknown value format %d", value[0])}
	}
	data := value[valueHeaderLen:]
	if want, got := binary.BigEndian.Uint32(value[1:5]), recordCRC(seq, data); want != got {
		return seq, nil, &CorruptError{Seq: seq, Reason: fmt.Sprintf("checksum mismatch: stored %08x, computed %08x", want, got)}
	}
	return seq, data, nil
}

func putUint64(v uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], v)
	return b[:]
}

func getUint64(b []byte) (uint64, bool) {
	if len(b) != 8 {
		return 0, false
	}
	return binary.BigEndian.Uint64(b), true
}
