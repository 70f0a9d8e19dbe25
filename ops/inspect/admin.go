package inspect

// Bodies of a node's admin API (node.AdminRoutes), shared by the node that
// serves them and the operator tools that read them.

// AuditReport is the residency audit of one region's log and read model.
type AuditReport struct {
	Region     string    `json:"region"`
	Zone       string    `json:"zone"`
	LogRecords uint64    `json:"log_records"`
	Identities uint64    `json:"model_identities"`
	Findings   []Finding `json:"findings"`
}

// ErasureState is what one region holds of an identity.
type ErasureState struct {
	Region   string `json:"region"`
	Identity string `json:"identity"`
	// Known: the model holds a GLOBAL state; Erased: it is the tombstone.
	Known  bool `json:"known"`
	Erased bool `json:"erased"`
	// ResidentState: a (sealed) RESIDENT state is stored.
	ResidentState bool `json:"resident_state"`
	// Keys is the number of the identity's data keys in the key store.
	Keys int `json:"keys"`
	// KeyRecords counts the log's data-key records of the identity that
	// still carry key material; RedactedKeyRecords those already redacted.
	// Both are 0 unless LogScanned (the log scan is optional: it reads
	// the whole log).
	KeyRecords         int  `json:"key_records"`
	RedactedKeyRecords int  `json:"redacted_key_records"`
	LogScanned         bool `json:"log_scanned"`
}

// Clean reports whether the region holds nothing of the erased identity
// but its tombstone (which needs the log scanned).
func (s ErasureState) Clean() bool {
	return s.Erased && !s.ResidentState && s.Keys == 0 && s.LogScanned && s.KeyRecords == 0
}

// SweepReport is what one region destroyed for an erased identity.
type SweepReport struct {
	Region        string   `json:"region"`
	Identity      string   `json:"identity"`
	KeysDestroyed int      `json:"keys_destroyed"`
	Redacted      []uint64 `json:"redacted_log_seqs"`
	ScrubRounds   int      `json:"wal_scrub_rounds"`
}
