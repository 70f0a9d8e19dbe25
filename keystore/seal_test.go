package keystore

import (
	"bytes"
	"crypto/rand"
	"errors"
	"testing"

	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
	"google.golang.org/protobuf/proto"
)

func randomKey() (k [KeySize]byte) {
	rand.Read(k[:])
	return k
}

func TestSealUnseal(t *testing.T) {
	key := randomKey()
	msg := []byte("alice@example.com")
	buf := make([]byte, len(msg), len(msg)+16)
	copy(buf, msg)
	s := Seal(key, "k1", "ev:r", buf)
	if s.KeyId != "k1" || len(s.Nonce) != 12 {
		t.Fatalf("sealed = %+v", s)
	}
	if bytes.Contains(s.Ciphertext, msg) || bytes.Contains(buf[:cap(buf)], msg) {
		t.Fatal("plaintext visible in ciphertext or left in the caller's buffer")
	}
	got, err := Unseal(key, s, "ev:r")
	if err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("Unseal = %q, %v", got, err)
	}

	tampered := proto.Clone(s).(*meridianv1.Sealed)
	tampered.Ciphertext[0] ^= 1
	for name, tc := range map[string]struct {
		key [KeySize]byte
		s   *meridianv1.Sealed
		rid string
	}{
		"wrong record id": {key, s, "ev:g"},
		"wrong key":       {randomKey(), s, "ev:r"},
		"tampered":        {key, tampered, "ev:r"},
		"short nonce":     {key, &meridianv1.Sealed{Nonce: []byte{1}, Ciphertext: s.Ciphertext}, "ev:r"},
	} {
		if _, err := Unseal(tc.key, tc.s, tc.rid); !errors.Is(err, ErrAuth) {
			t.Errorf("%s: err = %v; want ErrAuth", name, err)
		}
	}
	if _, err := Unseal(key, nil, "x"); !errors.Is(err, ErrInvalid) {
		t.Errorf("nil sealed: err = %v; want ErrInvalid", err)
	}
}

func TestWrapUnwrap(t *testing.T) {
	zk := ZoneKey{ID: "eu-2026", Key: randomKey()}
	zones := map[string]ZoneKey{"eu": zk, "us": {ID: "us-2026", Key: randomKey()}}
	dataKey := randomKey()
	dk := Wrap(zk, "identity-1", "key-1", dataKey)
	if dk.KeyId != "key-1" || dk.ZoneKeyId != "eu-2026" || bytes.Contains(dk.WrappedKey, dataKey[:]) {
		t.Fatalf("wrapped = %+v", dk)
	}
	got, err := Unwrap(zones, "identity-1", dk)
	if err != nil || got != dataKey {
		t.Fatalf("Unwrap = %v", err)
	}
	if _, err := Unwrap(zones, "identity-2", dk); !errors.Is(err, ErrAuth) {
		t.Errorf("other identity: %v; want ErrAuth", err)
	}
	relabeled := proto.Clone(dk).(*meridianv1.DataKey)
	relabeled.KeyId = "key-2"
	if _, err := Unwrap(zones, "identity-1", relabeled); !errors.Is(err, ErrAuth) {
		t.Errorf("other key id: %v; want ErrAuth", err)
	}
	if _, err := Unwrap(map[string]ZoneKey{"us": zones["us"]}, "identity-1", dk); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing zone key: %v; want ErrNotFound", err)
	}
	if _, err := Unwrap(zones, "identity-1", nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("nil: %v; want ErrInvalid", err)
	}
}

// A Key's methods (with its cipher built once) interoperate with the
// package functions; UnsealAppend reuses the caller's buffer.
func TestKeyMethods(t *testing.T) {
	k := Key{ID: "k1", Material: randomKey()}.WithCipher()
	s := k.Seal("ev:r", []byte("bob@example.com"))
	got, err := Unseal(k.Material, s, "ev:r")
	if err != nil || string(got) != "bob@example.com" {
		t.Fatalf("Unseal of Key.Seal = %q, %v", got, err)
	}
	buf := make([]byte, 0, 64)
	got, err = k.UnsealAppend(buf, Seal(k.Material, "k1", "ev:r", []byte("carol@example.com")), "ev:r")
	if err != nil || string(got) != "carol@example.com" || &got[:1][0] != &buf[:1][0] {
		t.Fatalf("UnsealAppend = %q, %v (in the caller's buffer: want it reused)", got, err)
	}
	if _, err := k.UnsealAppend(buf, s, "ev:g"); !errors.Is(err, ErrAuth) {
		t.Fatalf("wrong record id: err = %v; want ErrAuth", err)
	}
}

// An Unwrapper unwraps what Wrap made, as Unwrap does, and names what it
// cannot.
func TestUnwrapper(t *testing.T) {
	zk := ZoneKey{ID: "eu-1", Key: randomKey()}
	u := NewUnwrapper(map[string]ZoneKey{"eu": zk})
	dk := randomKey()
	w := Wrap(zk, "id-1", "k1", dk)
	if got, err := u.Unwrap("id-1", w); err != nil || got != dk {
		t.Fatalf("Unwrap = %v", err)
	}
	if _, err := u.Unwrap("id-2", w); !errors.Is(err, ErrAuth) {
		t.Fatalf("other identity: err = %v; want ErrAuth", err)
	}
	if _, err := u.Unwrap("id-1", Wrap(ZoneKey{ID: "us-1", Key: randomKey()}, "id-1", "k1", dk)); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown zone key: err = %v; want ErrNotFound", err)
	}
	if _, err := u.Unwrap("id-1", nil); !errors.Is(err, ErrInvalid) {
		t.Fatalf("nil: err = %v; want ErrInvalid", err)
	}
}
