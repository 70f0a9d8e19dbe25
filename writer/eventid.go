package writer

import (
	"crypto/rand"
	"sync/atomic"
	"time"
)

// uuidLen is the length of a UUID in canonical form.
const uuidLen = 36

// lastV7 is the (unix ms << 12 | sub-ms sequence) of the last event id
// made by newEventID.
var lastV7 atomic.Int64

// newEventID writes a new UUIDv7 in canonical lower-case form into dst
// (uuidLen bytes). It is uuid.NewV7 without its two allocations (the UUID
// read through an io.Reader, its String): 48 bits of unix milliseconds,
// 12 bits of sub-millisecond time that only grow within the process (ids
// made here sort by creation), 62 random bits from crypto/rand.
func newEventID(dst []byte) {
	var u [16]byte
	rand.Read(u[8:]) // never fails (crypto/rand since Go 1.24); b does not escape
	t, s := v7Time(time.Now().UnixNano())
	u[0], u[1], u[2], u[3], u[4], u[5] = byte(t>>40), byte(t>>32), byte(t>>24), byte(t>>16), byte(t>>8), byte(t)
	u[6] = 0x70 | byte(s>>8)&0x0f
	u[7] = byte(s)
	u[8] = u[8]&0x3f | 0x80 // variant 10 (RFC 4122)
	formatUUID(dst, &u)
}

// v7Time is uuid's getV7Time on an atomic instead of a mutex: the unix
// milliseconds of nano and 12 bits of its sub-millisecond part (>> 8),
// moved past the last value handed out if the clock did not advance.
func v7Time(nano int64) (milli, seq int64) {
	for {
		last := lastV7.Load()
		milli = nano / 1e6
		now := milli<<12 + (nano-milli*1e6)>>8
		if now <= last {
			now = last + 1
		}
		if lastV7.CompareAndSwap(last, now) {
			return now >> 12, now & 0xfff
		}
	}
}

const hexDigits = "0123456789abcdef"

// formatUUID writes u as 8-4-4-4-12 lower-case hex digits into dst.
func formatUUID(dst []byte, u *[16]byte) {
	_ = dst[uuidLen-1]
	j := 0
	for i, c := range u {
		switch i {
		case 4, 6, 8, 10:
			dst[j] = '-'
			j++
		}
		dst[j], dst[j+1] = hexDigits[c>>4], hexDigits[c&0x0f]
		j += 2
	}
}
