package eventlog

import (
	"errors"
	"fmt"
	"testing"

	"github.com/cockroachdb/pebble/v2"
)

// TestCorruptRecords damages record 5 of 10 through Pebble directly (the log
// closed) and checks that Read and Reader return 1..4, then a *CorruptError
// naming the sequence, never the damaged bytes; records after it are still
// readable on their own.
func TestCorruptRecords(t *testing.T) {
	for _, tc := range []struct {
		name    string
		damage  func(t *testing.T, db *pebble.DB)
		wantSeq uint64
		wantN   int // good records before the error
	}{
		{"flipped data byte", func(t *testing.T, db *pebble.DB) {
			v := getValue(t, db, 5)
			v[len(v)-1] ^= 0x01
			set(t, db, recordKey(5), v)
		}, 5, 4},
		{"flipped checksum byte", func(t *testing.T, db *pebble.DB) {
			v := getValue(t, db, 5)
			v[2] ^= 0x80
			set(t, db, recordKey(5), v)
		}, 5, 4},
		{"truncated value", func(t *testing.T, db *pebble.DB) {
			set(t, db, recordKey(5), getValue(t, db, 5)[:3])
		}, 5, 4},
		{"empty value", func(t *testing.T, db *pebble.DB) {
			set(t, db, recordKey(5), nil)
		}, 5, 4},
		{"data cut short", func(t *testing.T, db *pebble.DB) {
			v := getValue(t, db, 5)
			set(t, db, recordKey(5), v[:len(v)-2])
		}, 5, 4},
		{"unknown format", func(t *testing.T, db *pebble.DB) {
			v := getValue(t, db, 5)
			v[0] = 9
			set(t, db, recordKey(5), v)
		}, 5, 4},
		{"record stored under another sequence", func(t *testing.T, db *pebble.DB) {
			set(t, db, recordKey(5), getValue(t, db, 6))
		}, 5, 4},
		{"stray key inside the record range", func(t *testing.T, db *pebble.DB) {
			set(t, db, append(recordKey(5), 0), getValue(t, db, 5))
		}, 6, 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			l := openLog(t, Options{Dir: dir})
			ctx := ctxT(t)
			for i := 1; i <= 10; i++ {
				if _, err := l.Append(ctx, fmt.Appendf(nil, "record-%02d", i)); err != nil {
					t.Fatal(err)
				}
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			db, err := pebble.Open(dir, &pebble.Options{Logger: quietLogger{}})
			if err != nil {
				t.Fatal(err)
			}
			tc.damage(t, db)
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}

			l = openLog(t, Options{Dir: dir})
			recs, err := l.Read(1, 100)
			checkCorrupt(t, "Read", recs, err, tc.wantSeq, tc.wantN)

			r := l.NewReader(1)
			recs = nil
			for r.Next() {
				recs = append(recs, Record{r.Record().Seq, append([]byte(nil), r.Record().Data...)})
			}
			checkCorrupt(t, "Reader", recs, r.Err(), tc.wantSeq, tc.wantN)
			if r.Next() {
				t.Error("Reader continued past the corrupt record")
			}
			if err := r.Close(); err != nil {
				t.Error(err)
			}

			if after, err := l.Read(7, 100); err != nil || len(after) != 4 || after[0].Seq != 7 {
				t.Errorf("Read(7) = %v, %v; want 7..10", after, err)
			}
			if m := l.Metrics(); m.CorruptReads != 2 {
				t.Errorf("CorruptReads = %d, want 2", m.CorruptReads)
			}
		})
	}
}

func checkCorrupt(t *testing.T, what string, recs []Record, err error, wantSeq uint64, wantN int) {
	t.Helper()
	var ce *CorruptError
	if !errors.As(err, &ce) || ce.Seq != wantSeq || !errors.Is(err, ErrCorrupt) {
		t.Fatalf("%s error = %v, want *CorruptError at seq %d", what, err, wantSeq)
	}
	if len(recs) != wantN {
		t.Fatalf("%s returned %d records before the corrupt one, want %d", what, len(recs), wantN)
	}
	for i, r := range recs {
		if want := fmt.Sprintf("record-%02d", i+1); r.Seq != uint64(i+1) || string(r.Data) != want {
			t.Fatalf("%s record %d = {%d %q}, want {%d %q}", what, i, r.Seq, r.Data, i+1, want)
		}
	}
}

func getValue(t *testing.T, db *pebble.DB, seq uint64) []byte {
	t.Helper()
	v, closer, err := db.Get(recordKey(seq))
	if err != nil {
		t.Fatal(err)
	}
	defer closer.Close()
	return append([]byte(nil), v...)
}

func set(t *testing.T, db *pebble.DB, k, v []byte) {
	t.Helper()
	if err := db.Set(k, v, pebble.Sync); err != nil {
		t.Fatal(err)
	}
}

// TestRecordFraming: every single-bit flip of a stored value is detected
// (CRC-32C detects all of them), and so is a value moved to any other key.
func TestRecordFraming(t *testing.T) {
	for _, data := range [][]byte{nil, []byte("x"), []byte("an identity event of some length")} {
		const seq = 42
		v := make([]byte, valueHeaderLen+len(data))
		putRecordValue(v, seq, data)
		if s, d, err := decodeRecord(recordKey(seq), v, seq); err != nil || s != seq || string(d) != string(data) {
			t.Fatalf("round trip of %q = %d %q %v", data, s, d, err)
		}
		for bit := range len(v) * 8 {
			w := append([]byte(nil), v...)
			w[bit/8] ^= 1 << (bit % 8)
			if _, _, err := decodeRecord(recordKey(seq), w, seq); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("flip of bit %d in value of %q not detected", bit, data)
			}
		}
		for _, other := range []uint64{0, 41, 43, 1 << 40} {
			if _, _, err := decodeRecord(recordKey(other), v, other); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("value of seq %d accepted under seq %d", seq, other)
			}
		}
	}
}

// FuzzDecodeRecord: arbitrary stored bytes never panic and are accepted only
// when they verify.
func FuzzDecodeRecord(f *testing.F) {
	v := make([]byte, valueHeaderLen+3)
	putRecordValue(v, 7, []byte("abc"))
	f.Add(recordKey(7), v)
	f.Add(recordKey(7), []byte{})
	f.Add([]byte{prefixRecord, 1}, v)
	f.Fuzz(func(t *testing.T, key, value []byte) {
		seq, data, err := decodeRecord(key, value, 1)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		w := make([]byte, valueHeaderLen+len(data))
		putRecordValue(w, seq, data)
		if string(w) != string(value) {
			t.Fatalf("accepted a value that does not re-encode to itself")
		}
	})
}
