package main

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"

	"github.com/meridian-id/meridian/keystore"
)

// keyFile is the on-disk form of a region's secrets: the deployment-wide
// HMAC key of the email/username hashes and the zone keys the region may use
// (at least its own zone's). Keys are standard base64.
type keyFile struct {
	HashKey  string        `json:"hash_key"`
	ZoneKeys []zoneKeyJSON `json:"zone_keys"`
}

type zoneKeyJSON struct {
	Zone string `json:"zone"`
	ID   string `json:"id"`
	Key  string `json:"key"`
}

// secrets are the decoded contents of a key file.
type secrets struct {
	hashKey  []byte
	zoneKeys map[string]keystore.ZoneKey
}

// loadKeyFile reads and checks a key file; errors name the file and field.
func loadKeyFile(path string) (*secrets, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("key file: %w", err)
	}
	var kf keyFile
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&kf); err != nil {
		return nil, fmt.Errorf("key file %s: %w", path, err)
	}
	s := &secrets{zoneKeys: map[string]keystore.ZoneKey{}}
	if s.hashKey, err = base64.StdEncoding.DecodeString(kf.HashKey); err != nil || len(s.hashKey) < 16 {
		return nil, fmt.Errorf("key file %s: hash_key: must be base64 of at least 16 bytes", path)
	}
	if len(kf.ZoneKeys) == 0 {
		return nil, fmt.Errorf("key file %s: zone_keys: at least one zone key is required", path)
	}
	for i, zk := range kf.ZoneKeys {
		key, err := base64.StdEncoding.DecodeString(zk.Key)
		switch {
		case zk.Zone == "":
			return nil, fmt.Errorf("key file %s: zone_keys[%d].zone: required", path, i)
		case zk.ID == "":
			return nil, fmt.Errorf("key file %s: zone_keys[%d].id: required", path, i)
		case err != nil || len(key) != keystore.KeySize:
			return nil, fmt.Errorf("key file %s: zone_keys[%d].key: must be base64 of exactly %d bytes", path, i, keystore.KeySize)
		}
		if _, dup := s.zoneKeys[zk.Zone]; dup {
			return nil, fmt.Errorf("key file %s: zone_keys[%d].zone: duplicate zone %q", path, i, zk.Zone)
		}
		var k keystore.ZoneKey
		k.ID = zk.ID
		copy(k.Key[:], key)
		s.zoneKeys[zk.Zone] = k
	}
	return s, nil
}

func randomB64(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}

// writeJSON writes v indented, atomically (temp file + rename).
func writeJSON(path string, v any, perm os.FileMode) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), perm); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
