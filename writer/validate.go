package writer

import (
	"fmt"
	"net/http"
	"strings"
	"sync"

	"github.com/meridian-id/meridian/conflict"
	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// prepared is a validated event with its body split, ready to stamp. Nothing
// in it aliases the caller's event.
type prepared struct {
	ev       *meridianv1.Event
	plan     *bodyPlan
	home     string // home region (from the envelope or IdentityCreated)
	zone     string // the identity's zone
	parts    parts
	size     int
	proposed conflict.Timestamp // client-proposed HLC, 0 if none
	// scratch holds the parts and, after them, the event's records
	// (batch.add); it goes back to scratchPool once the log has the
	// records (releaseScratch).
	scratch *[]byte
}

// scratchPool holds the buffers an event's split parts and records are
// written into (*[]byte): both are dead once the log has copied the
// records into its batch, so each append reuses one instead of allocating
// two (about 2 KB of garbage per event otherwise). Buffers that grew past
// scratchPoolMax (a large event) are left to the GC.
var scratchPool = sync.Pool{New: func() any { b := make([]byte, 0, scratchPoolSize); return &b }}

const (
	scratchPoolSize = 4 << 10
	scratchPoolMax  = 64 << 10
	// recordsRoom is what batch.add needs beyond the body's length for an
	// event's records (two envelopes, the sealed field's framing, the
	// sequence's room, the resident record id), with a margin; only the
	// size of a fresh scratch buffer depends on it.
	recordsRoom = 1024
)

// scratchFor returns a buffer of at least n bytes of capacity from
// scratchPool.
func scratchFor(n int) *[]byte {
	bp := scratchPool.Get().(*[]byte)
	if cap(*bp) < n {
		*bp = make([]byte, 0, n)
	}
	return bp
}

// releaseScratch clears what p wrote into its scratch buffer (the plaintext
// of the RESIDENT part among it: nothing personal is left in pooled memory)
// and returns it to scratchPool. p must not be used afterwards.
func (p *prepared) releaseScratch() {
	bp := p.scratch
	if bp == nil {
		return
	}
	p.scratch, p.parts = nil, parts{}
	if b := *bp; cap(b) <= scratchPoolMax {
		clear(b) // what was written lies below len: the parts, then the records
		*bp = b[:0]
		scratchPool.Put(bp)
	}
}

// marshalEvent is the one encoding of the caller's event: its length is the
// size checked against MaxEventBytes and its body bytes are what the split
// copies from. It is written into a pooled buffer (encPool): nothing keeps
// it past prepare.
var marshalEvent = proto.MarshalOptions{}

// encPool holds the buffers events are encoded into (*[]byte). Buffers
// that grew past encPoolMax (a large event) are left to the GC.
var encPool = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

const encPoolMax = 64 << 10

// prepare checks one event against every rule, in the order a client would
// fix them, and splits its body into p. It does not modify ev.
func (w *Writer) prepare(p *prepared, ev *meridianv1.Event) *Error {
	if ev == nil {
		return invalidf("", "event is null")
	}
	bp := encPool.Get().(*[]byte)
	enc, err := marshalEvent.MarshalAppend((*bp)[:0], ev)
	defer func() {
		if cap(enc) <= encPoolMax {
			*bp = enc[:0]
			encPool.Put(bp)
		}
	}()
	if err != nil {
		return invalidf("", "event cannot be encoded: %v", err)
	}
	if len(enc) > w.cfg.MaxEventBytes {
		return tooLargef("", "event is %d bytes encoded; the limit is %d (MaxEventBytes)", len(enc), w.cfg.MaxEventBytes)
	}
	if err := checkUUID("identity_id", ev.IdentityId, false); err != nil {
		return err
	}
	if ev.EventId != "" {
		if err := checkUUID("event_id", ev.EventId, true); err != nil {
			return err
		}
	}
	if err := checkServerSet(ev); err != nil {
		return err
	}

	num, body, unknown, ok := bodyBytes(enc, w.plans)
	switch {
	case !ok:
		return invalidf("", "event encoding is malformed")
	case unknown != 0:
		return invalidf("body", "unknown field number %d: not an event type or envelope field of this schema", unknown)
	case num == 0:
		return invalidf("body", "required: exactly one event type (identity_created, traits_updated, ...)")
	}
	plan := w.plans.of(num)
	if !plan.allowed {
		return invalidf(plan.name, "%s events are written by meridian itself, not accepted from clients", plan.name)
	}

	home, herr := bodyHomeRegion(ev)
	if herr != nil {
		return herr
	}
	zone, ok := w.cfg.Topology.ZoneOf(home)
	if !ok {
		return invalidf("home_region", "%q is not a region of the topology", home)
	}

	var proposed conflict.Timestamp
	if ev.Hlc != 0 {
		proposed = conflict.Timestamp(ev.Hlc)
		now := w.cfg.Now()
		if ahead := proposed.Physical() - now; ahead > w.cfg.MaxDrift.Milliseconds() {
			return invalidf("hlc", "proposed HLC is %d ms ahead of this node's clock; at most %s allowed (MaxDrift)", ahead, w.cfg.MaxDrift)
		}
	}

	if err := checkBody(ev); err != nil {
		return err
	}

	*p = prepared{ev: ev, plan: plan, home: home, zone: zone, size: len(enc), proposed: proposed}
	// The three outputs share the scratch buffer, and the records follow
	// them there (batch.add); each output is capped, so one that outgrows
	// its share moves instead of running into the next.
	g, r, k := len(body)+derivedRoom, 0, 0
	if plan.split.resident {
		r, k = len(body)+16, 32
	}
	p.scratch = scratchFor(g + r + k + len(body) + recordsRoom)
	buf := (*p.scratch)[:g+r+k]
	p.parts.global, p.parts.resident, p.parts.keys = buf[:0:g], buf[g:g:g+r], buf[g+r:g+r:g+r+k]
	*p.scratch = buf
	if uerr := plan.split.split(body, &p.parts); uerr != nil {
		if uerr.err != nil {
			return invalidf(joinPath(plan.name, uerr.path), "%v", uerr.err)
		}
		return invalidf(joinPath(plan.name, uerr.path), "unknown field number %d: not a field of this schema", uerr.num)
	}
	if p.parts.hasResident && zone != w.zone {
		e := newError(ErrWrongRegion, CodeWrongRegion, http.StatusMisdirectedRequest, joinPath(plan.name, plan.split.firstResident(body)),
			fmt.Sprintf("RESIDENT data of an identity in zone %q cannot be written in region %s (zone %q); send it to a region of its zone, such as its home region",
				zone, w.cfg.Region, w.zone))
		e.HomeRegion = home
		return e
	}
	return nil
}

// checkUUID requires the canonical lower-case 36-character form, so that one
// identity cannot appear under two spellings (ids become subjects and keys).
func checkUUID(field, s string, v7 bool) *Error {
	if s == "" {
		return invalidf(field, "required")
	}
	if !canonicalUUID(s) {
		return invalidf(field, "%q is not a UUID in canonical lower-case form (8-4-4-4-12 hex digits)", s)
	}
	// In the canonical form the version is the digit at 14 and the
	// RFC 4122 variant (10xx) a digit 8-b at 19: no need to parse.
	if v7 && (s[14] != '7' || !strings.ContainsRune("89ab", rune(s[19]))) {
		return invalidf(field, "%q is a version %d UUID; event ids must be UUIDv7", s, strings.IndexByte(hexDigits, s[14]))
	}
	return nil
}

// canonicalUUID: 36 characters, hyphens at 8, 13, 18, 23, lower-case hex
// elsewhere (without uuid.UUID.String's allocation).
func canonicalUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := range len(s) {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
				return false
			}
		}
	}
	return true
}

// checkServerSet refuses envelope fields that only the writer sets.
func checkServerSet(ev *meridianv1.Event) *Error {
	const rule = "set by the writer; must be empty in a request"
	switch {
	case ev.OriginRegion != "":
		return invalidf("origin_region", rule)
	case ev.OriginNode != "":
		return invalidf("origin_node", rule)
	case ev.Sequence != 0:
		return invalidf("sequence", rule)
	case ev.Zone != "":
		return invalidf("zone", rule)
	case ev.Part != meridianv1.Part_PART_UNSPECIFIED:
		return invalidf("part", rule)
	case ev.Sealed != nil:
		return invalidf("sealed", rule)
	case ev.Observed != nil:
		return invalidf("observed", rule+" (the causal context of the region that writes the event)")
	}
	return nil
}

// bodyHomeRegion is the envelope's home_region; IdentityCreated also names it
// in its body, and the two must agree (either may be left empty).
func bodyHomeRegion(ev *meridianv1.Event) (string, *Error) {
	home := ev.HomeRegion
	if ic := ev.GetIdentityCreated(); ic != nil {
		switch {
		case ic.HomeRegion == "" && home == "":
			return "", invalidf("identity_created.home_region", "required")
		case home == "":
			home = ic.HomeRegion
		case ic.HomeRegion != "" && ic.HomeRegion != home:
			return "", invalidf("identity_created.home_region", "%q differs from the envelope's home_region %q", ic.HomeRegion, home)
		}
	}
	if home == "" {
		return "", invalidf("home_region", "required: the identity's home region")
	}
	return home, nil
}

// checkBody applies the rules of each event type.
func checkBody(ev *meridianv1.Event) *Error {
	switch b := ev.Body.(type) {
	case *meridianv1.Event_IdentityCreated:
		return checkTraits("identity_created.traits", b.IdentityCreated.GetTraits(), false)
	case *meridianv1.Event_TraitsUpdated:
		return checkTraits("traits_updated.traits", b.TraitsUpdated.GetTraits(), true)
	case *meridianv1.Event_EmailVerified:
		e := b.EmailVerified
		if strings.TrimSpace(e.GetEmail()) == "" {
			return invalidf("email_verified.email", "required")
		}
		if len(e.GetEmailHash()) > 0 {
			return invalidf("email_verified.email_hash", "set by the writer from email; must be empty in a request")
		}
	case *meridianv1.Event_CredentialAdded:
		c := b.CredentialAdded.GetCredential()
		switch {
		case c == nil:
			return invalidf("credential_added.credential", "required")
		case c.GetCredentialId() == "":
			return invalidf("credential_added.credential.credential_id", "required")
		case c.GetType() == meridianv1.CredentialType_CREDENTIAL_TYPE_UNSPECIFIED:
			return invalidf("credential_added.credential.type", "required (password_hash, webauthn or oidc_subject)")
		case !knownEnum(c.GetType().Descriptor(), protoreflect.EnumNumber(c.GetType())):
			return invalidf("credential_added.credential.type", "unknown credential type %d", c.GetType())
		}
	case *meridianv1.Event_CredentialRemoved:
		if b.CredentialRemoved.GetCredentialId() == "" {
			return invalidf("credential_removed.credential_id", "required")
		}
	case *meridianv1.Event_RoleGranted:
		if b.RoleGranted.GetRole() == "" {
			return invalidf("role_granted.role", "required")
		}
	case *meridianv1.Event_RoleRevoked:
		if b.RoleRevoked.GetRole() == "" {
			return invalidf("role_revoked.role", "required")
		}
	case *meridianv1.Event_SessionIssued:
		s := b.SessionIssued.GetSession()
		switch {
		case s == nil:
			return invalidf("session_issued.session", "required")
		case s.GetSessionId() == "":
			return invalidf("session_issued.session.session_id", "required")
		case s.GetExpiresAtUnixMs() <= 0:
			return invalidf("session_issued.session.expires_at_unix_ms", "required: a positive unix time in ms")
		case s.GetIssuedAtUnixMs() != 0 && s.GetExpiresAtUnixMs() <= s.GetIssuedAtUnixMs():
			return invalidf("session_issued.session.expires_at_unix_ms", "must be after issued_at_unix_ms")
		}
	case *meridianv1.Event_SessionRevoked:
		if b.SessionRevoked.GetSessionId() == "" {
			return invalidf("session_revoked.session_id", "required")
		}
	case *meridianv1.Event_StateChanged:
		st := b.StateChanged.GetStatus()
		if st == meridianv1.IdentityStatus_IDENTITY_STATUS_UNSPECIFIED || !knownEnum(st.Descriptor(), protoreflect.EnumNumber(st)) {
			return invalidf("state_changed.status", "required: IDENTITY_STATUS_ACTIVE or IDENTITY_STATUS_DISABLED (got %d)", st)
		}
	case *meridianv1.Event_LoginFailed:
		if b.LoginFailed.GetAtUnixMs() < 0 {
			return invalidf("login_failed.at_unix_ms", "must not be negative")
		}
	}
	return nil
}

// checkTraits refuses the writer-set hashes; an update must change something.
func checkTraits(field string, t *meridianv1.Traits, required bool) *Error {
	if t == nil {
		if required {
			return invalidf(field, "required: the traits to change")
		}
		return nil
	}
	if t.EmailHash != nil {
		return invalidf(field+".email_hash", "set by the writer from email; must be empty in a request")
	}
	if t.UsernameHash != nil {
		return invalidf(field+".username_hash", "set by the writer from username; must be empty in a request")
	}
	if required && proto.Size(t) == 0 {
		return invalidf(field, "names no trait; an update must change at least one")
	}
	return nil
}

func knownEnum(ed protoreflect.EnumDescriptor, n protoreflect.EnumNumber) bool {
	return ed.Values().ByNumber(n) != nil
}
