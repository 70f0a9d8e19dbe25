package writer

import (
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

func TestNewEventID(t *testing.T) {
	var prev string
	start := time.Now().UnixMilli()
	for i := range 10000 {
		var b [uuidLen]byte
		newEventID(b[:])
		id := string(b[:])
		if err := checkUUID("event_id", id, true); err != nil {
			t.Fatalf("id %d %q: %v", i, id, err)
		}
		u := uuid.MustParse(id)
		if u.Version() != 7 || u.Variant() != uuid.RFC4122 {
			t.Fatalf("id %q: version %d variant %v", id, u.Version(), u.Variant())
		}
		if ms := time.Unix(u.Time().UnixTime()).UnixMilli(); ms < start-1000 || ms > time.Now().UnixMilli()+1000 {
			t.Fatalf("id %q: time %d ms, want about %d", id, ms, start)
		}
		if id <= prev {
			t.Fatalf("id %d %q does not sort after %q", i, id, prev)
		}
		prev = id
	}
}

func TestV7TimeOnlyGrows(t *testing.T) {
	nano := time.Now().UnixNano()
	m0, s0 := v7Time(nano)
	m1, s1 := v7Time(nano) // the same instant
	m2, s2 := v7Time(nano - int64(time.Second))
	if !(m0<<12+s0 < m1<<12+s1 && m1<<12+s1 < m2<<12+s2) {
		t.Fatalf("v7Time went back: %d.%d, %d.%d, %d.%d", m0, s0, m1, s1, m2, s2)
	}
	if s0 > 0xfff || s1 > 0xfff || s2 > 0xfff {
		t.Fatalf("sequence beyond 12 bits: %d %d %d", s0, s1, s2)
	}
}

func TestCheckUUIDVersionAndVariant(t *testing.T) {
	v7 := uuid.Must(uuid.NewV7()).String()
	badVariant := v7[:19] + "c" + v7[20:] // variant 110x (Microsoft)
	for _, tc := range []struct {
		id   string
		v7   bool
		want string // "" = valid; else a substring of the message
	}{
		{v7, true, ""},
		{uuid.NewString(), false, ""},
		{uuid.NewString(), true, "version 4 UUID"},
		{badVariant, true, "version 7 UUID"},
		{badVariant, false, ""},
		{v7[:14] + "f" + v7[15:], true, "version 15 UUID"},
		{strings.ToUpper(v7), true, "canonical lower-case"},
		{v7[:35], true, "canonical lower-case"},
	} {
		err := checkUUID("event_id", tc.id, tc.v7)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("checkUUID(%q, v7=%v) = %v, want nil", tc.id, tc.v7, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("checkUUID(%q, v7=%v) = %v, want an error with %q", tc.id, tc.v7, err, tc.want)
		}
	}
}
