package conflict

import (
	"bytes"
	"fmt"
	"math/rand"
	"slices"
	"sort"
	"testing"
	"testing/quick"

	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
	"google.golang.org/protobuf/proto"
)

// genEvents makes n random whole events over two identities from three
// nodes, with colliding HLCs (so ties are broken by node and event id),
// conflicting trait updates, grant/revoke races, revoke vs re-issue of
// sessions and, rarely, erasure racing everything else. Sequences are dense
// per node and step by two, leaving room for the two parts of each event.
func genEvents(r *rand.Rand, n int) []*meridianv1.Event {
	pick := func(xs ...string) string { return xs[r.Intn(len(xs))] }
	opt := func(xs ...string) *string { s := pick(xs...); return &s }
	seqs := map[string]uint64{}
	traits := func() *meridianv1.Traits {
		t := &meridianv1.Traits{}
		for range 1 + r.Intn(3) {
			switch r.Intn(9) {
			case 0:
				t.Email = opt("a@x", "b@x", "c@x")
			case 1:
				t.Username = opt("ann", "bob")
			case 2:
				t.Name = opt("Ann", "Bob", "")
			case 3:
				t.Phone = opt("+1", "+2")
			case 4:
				t.Locale = opt("fr", "de", "en")
			case 5:
				t.Metadata = map[string]string{pick("k1", "k2"): pick("v1", "v2", "")}
			case 6:
				t.EmailHash = []byte(pick("h1", "h2"))
			case 7:
				t.UsernameHash = []byte(pick("u1", "u2"))
			case 8:
				t.Address = &meridianv1.Address{City: pick("Paris", "Lyon"), Country: pick("", "FR")}
			}
		}
		return t
	}
	evs := make([]*meridianv1.Event, 0, n)
	for i := range n {
		node := pick("n1", "n2", "n3")
		seqs[node] += 2
		ev := &meridianv1.Event{
			EventId:    fmt.Sprintf("ev%03d", i),
			IdentityId: pick("id1", "id2"),
			OriginNode: node,
			Hlc:        uint64(MakeTimestamp(int64(1+r.Intn(6)), uint16(r.Intn(2)))),
			Sequence:   seqs[node],
		}
		var body proto.Message
		switch k := r.Intn(100); {
		case k < 5:
			body = &meridianv1.IdentityCreated{HomeRegion: pick("eu-west", "eu-central"), Traits: traits()}
		case k < 30:
			body = &meridianv1.TraitsUpdated{Traits: traits()}
		case k < 35:
			email := pick("a@x", "b@x")
			body = &meridianv1.EmailVerified{Email: email, EmailHash: []byte("h-" + email)}
		case k < 44:
			body = &meridianv1.CredentialAdded{Credential: &meridianv1.Credential{
				CredentialId: pick("c1", "c2"), Type: meridianv1.CredentialType(1 + r.Intn(3)),
				Material: []byte(pick("m1", "m2", "")), CreatedAtUnixMs: int64(r.Intn(3)),
			}}
		case k < 50:
			body = &meridianv1.CredentialRemoved{CredentialId: pick("c1", "c2")}
		case k < 60:
			body = &meridianv1.RoleGranted{Role: pick("admin", "viewer", "editor")}
		case k < 68:
			body = &meridianv1.RoleRevoked{Role: pick("admin", "viewer", "editor")}
		case k < 76:
			body = &meridianv1.SessionIssued{Session: &meridianv1.Session{
				SessionId: pick("s1", "s2"), ExpiresAtUnixMs: int64(r.Intn(3)),
				Device: pick("", "phone", "laptop"), Ip: pick("", "10.0.0.1"),
			}}
		case k < 81:
			body = &meridianv1.SessionRevoked{SessionId: pick("s1", "s2")}
		case k < 90:
			body = &meridianv1.LoginFailed{AtUnixMs: int64(r.Intn(5)), Counted: r.Intn(2) == 0}
		case k < 98:
			body = &meridianv1.StateChanged{Status: meridianv1.IdentityStatus(1 + r.Intn(2))}
		default:
			body = &meridianv1.IdentityErased{Reason: pick("", "gdpr")}
		}
		setBody(ev, body)
		evs = append(evs, ev)
	}
	foldContexts(r, evs)
	return evs
}

// isRemove reports whether ev removes set elements.
func isRemove(ev *meridianv1.Event) bool {
	switch ev.GetBody().(type) {
	case *meridianv1.Event_CredentialRemoved, *meridianv1.Event_RoleRevoked:
		return true
	}
	return false
}

func stampOf(ev *meridianv1.Event) Stamp {
	return Stamp{HLC: Timestamp(ev.GetHlc()), Node: ev.GetOriginNode(), EventID: ev.GetEventId()}
}

// foldContexts gives about half of the removes a causal context that
// observed exactly the events ordered before them (per other node, the
// largest HLC of its events stamped below the remove), as a sequential
// writer would, so that folding in stamp order stays the reference. The
// others keep no context (the old rule, which that fold also is). A remove
// whose own node has an event of the same HLC ordered after it (by event
// id) keeps no context: its own node is cut at its HLC, which would cover
// that event.
func foldContexts(r *rand.Rand, evs []*meridianv1.Event) {
	for _, rm := range evs {
		if !isRemove(rm) || r.Intn(2) == 0 {
			continue
		}
		s := stampOf(rm)
		ctx := map[string]uint64{}
		ok := true
		for _, ev := range evs {
			e := stampOf(ev)
			switch {
			case e.Node == s.Node:
				ok = ok && !(e.HLC == s.HLC && e.Compare(s) > 0)
			case e.Compare(s) < 0:
				ctx[e.Node] = max(ctx[e.Node], uint64(e.HLC))
			}
		}
		if ok {
			rm.Observed = &meridianv1.CausalContext{Hlc: ctx}
		}
	}
}

// referenceView is the naive oracle: sort the identity's events by the total
// order (hlc, node, event id) and fold them one by one with the plain meaning
// of each event, no CRDT metadata at all.
func referenceView(evs []*meridianv1.Event, id string) *meridianv1.Identity {
	var mine []*meridianv1.Event
	for _, ev := range evs {
		if ev.GetIdentityId() == id {
			mine = append(mine, ev)
		}
	}
	stamp := func(ev *meridianv1.Event) Stamp {
		return Stamp{HLC: Timestamp(ev.GetHlc()), Node: ev.GetOriginNode(), EventID: ev.GetEventId()}
	}
	sort.Slice(mine, func(i, j int) bool { return stamp(mine[i]).Compare(stamp(mine[j])) < 0 })

	out := &meridianv1.Identity{IdentityId: id}
	traits := &meridianv1.Traits{}
	mergeTraits := func(t *meridianv1.Traits) {
		if t.GetAddress() != nil {
			traits.Address = nil // an address is replaced whole
		}
		proto.Merge(traits, t)
	}
	roles, emails, hashes, revoked := map[string]bool{}, map[string]bool{}, map[string]bool{}, map[string]bool{}
	creds, sessions := map[string]*meridianv1.Credential{}, map[string]*meridianv1.Session{}
	for _, ev := range mine {
		out.UpdatedHlc = ev.GetHlc()
		switch b := ev.GetBody().(type) {
		case *meridianv1.Event_IdentityCreated:
			if b.IdentityCreated.GetHomeRegion() != "" {
				out.HomeRegion = b.IdentityCreated.GetHomeRegion()
			}
			mergeTraits(b.IdentityCreated.GetTraits())
		case *meridianv1.Event_TraitsUpdated:
			mergeTraits(b.TraitsUpdated.GetTraits())
		case *meridianv1.Event_EmailVerified:
			emails[b.EmailVerified.GetEmail()] = true
			hashes[string(b.EmailVerified.GetEmailHash())] = true
		case *meridianv1.Event_CredentialAdded:
			creds[b.CredentialAdded.GetCredential().GetCredentialId()] = b.CredentialAdded.GetCredential()
		case *meridianv1.Event_CredentialRemoved:
			delete(creds, b.CredentialRemoved.GetCredentialId())
		case *meridianv1.Event_RoleGranted:
			roles[b.RoleGranted.GetRole()] = true
		case *meridianv1.Event_RoleRevoked:
			delete(roles, b.RoleRevoked.GetRole())
		case *meridianv1.Event_SessionIssued:
			sessions[b.SessionIssued.GetSession().GetSessionId()] = b.SessionIssued.GetSession()
		case *meridianv1.Event_SessionRevoked:
			revoked[b.SessionRevoked.GetSessionId()] = true
		case *meridianv1.Event_LoginFailed:
			out.FailedLogins++
			out.LastFailedLoginUnixMs = max(out.LastFailedLoginUnixMs, b.LoginFailed.GetAtUnixMs())
		case *meridianv1.Event_StateChanged:
			out.Status = b.StateChanged.GetStatus()
		case *meridianv1.Event_IdentityErased:
			return &meridianv1.Identity{IdentityId: id, Erased: true, UpdatedHlc: ev.GetHlc()}
		}
	}
	if proto.Size(traits) > 0 {
		out.Traits = traits
	}
	out.Roles = slices.Sorted(mapsKeys(roles))
	out.VerifiedEmails = slices.Sorted(mapsKeys(emails))
	out.RevokedSessions = slices.Sorted(mapsKeys(revoked))
	for _, h := range slices.Sorted(mapsKeys(hashes)) {
		out.VerifiedEmailHashes = append(out.VerifiedEmailHashes, []byte(h))
	}
	for _, k := range slices.Sorted(mapsKeys(creds)) {
		out.Credentials = append(out.Credentials, creds[k])
	}
	for _, k := range slices.Sorted(mapsKeys(sessions)) {
		out.Sessions = append(out.Sessions, sessions[k])
	}
	return out
}

func mapsKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// parts splits every event as the writer does.
func parts(m *Merger, evs []*meridianv1.Event) []*meridianv1.Event {
	var out []*meridianv1.Event
	for _, ev := range evs {
		g, r := split(m, ev, ev.GetSequence(), ev.GetSequence()+1)
		for _, p := range []*meridianv1.Event{g, r} {
			if p != nil {
				out = append(out, p)
			}
		}
	}
	return out
}

// shuffledWithRepeats returns evs in a random order, some of them twice.
func shuffledWithRepeats(r *rand.Rand, evs []*meridianv1.Event) []*meridianv1.Event {
	out := slices.Clone(evs)
	for _, ev := range evs {
		if r.Intn(4) == 0 {
			out = append(out, ev)
		}
	}
	r.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

// applyByIdentity folds evs into one state per identity.
func applyByIdentity(t testing.TB, m *Merger, evs []*meridianv1.Event) map[string]*meridianv1.IdentityState {
	out := map[string]*meridianv1.IdentityState{}
	for _, ev := range evs {
		s, err := m.Apply(out[ev.GetIdentityId()], ev)
		if err != nil {
			t.Fatalf("Apply(%s): %v", ev.GetEventId(), err)
		}
		out[ev.GetIdentityId()] = s
	}
	return out
}

// everyWay is one set of events applied every way a deployment may apply
// them: parts projector style (GLOBAL and RESIDENT in separate states), all
// parts into one state, whole unsplit events, and three replicas from a
// random partition of the parts (with overlap), each in a shuffled order
// with repeats. States are by identity.
type everyWay struct {
	parts                        []*meridianv1.Event
	global, resident, all, whole map[string]*meridianv1.IdentityState
	reps                         [3]map[string]*meridianv1.IdentityState
}

func applyEveryWay(t *testing.T, m *Merger, r *rand.Rand, evs []*meridianv1.Event) everyWay {
	w := everyWay{parts: parts(m, evs)}
	var gs, rs []*meridianv1.Event
	for _, p := range shuffledWithRepeats(r, w.parts) {
		if p.GetPart() == meridianv1.Part_PART_GLOBAL {
			gs = append(gs, p)
		} else {
			rs = append(rs, p)
		}
	}
	w.global, w.resident = applyByIdentity(t, m, gs), applyByIdentity(t, m, rs)
	w.all = applyByIdentity(t, m, shuffledWithRepeats(r, w.parts))
	w.whole = applyByIdentity(t, m, shuffledWithRepeats(r, evs))
	var deal [3][]*meridianv1.Event
	for _, p := range w.parts {
		mask := 1 + r.Intn(7) // every part reaches at least one replica
		for i := range 3 {
			if mask&(1<<i) != 0 {
				deal[i] = append(deal[i], p)
			}
		}
	}
	for i := range w.reps {
		w.reps[i] = applyByIdentity(t, m, shuffledWithRepeats(r, deal[i]))
	}
	return w
}

func TestMergerConvergence(t *testing.T) {
	m := newTestMerger(t)
	f := func(seed int64) bool {
		r := rand.New(rand.NewSource(seed))
		evs := genEvents(r, 1+r.Intn(50))
		w := applyEveryWay(t, m, r, evs)
		ps, global, resident, all, whole, reps := w.parts, w.global, w.resident, w.all, w.whole, w.reps

		for id, st := range all {
			want := referenceView(evs, id)
			a, b, c := reps[0][id], reps[1][id], reps[2][id]
			joined := m.Merge(m.Merge(c, a), b)
			checks := []struct {
				name string
				got  proto.Message
				want proto.Message
			}{
				{"view of all parts equals the reference fold", m.View(st), want},
				{"view(global, resident) equals the reference fold", m.View(global[id], resident[id]), want},
				{"view of whole events equals the reference fold", m.View(whole[id]), want},
				{"merge(global, resident) equals applying all", m.Merge(global[id], resident[id]), st},
				{"pruning the resident state keeps the view", m.View(global[id], m.Prune(resident[id], global[id])), want},
				{"merged partitions equal applying all", joined, st},
				{"merge commutes", m.Merge(a, b), m.Merge(b, a)},
				{"merge associates", m.Merge(m.Merge(a, b), c), m.Merge(a, m.Merge(b, c))},
				{"merge is idempotent", m.Merge(st, st), st},
			}
			for _, ch := range checks {
				if !proto.Equal(ch.got, ch.want) {
					t.Logf("seed %d identity %s: %s\ngot  %s\nwant %s", seed, id, ch.name, js(ch.got), js(ch.want))
					return false
				}
			}
			for _, p := range ps {
				if p.GetIdentityId() != id {
					continue
				}
				again, err := m.Apply(st, p)
				if err != nil || !proto.Equal(again, st) {
					t.Logf("seed %d: re-applying %s changed the state (err %v)", seed, p.GetEventId(), err)
					return false
				}
			}
		}
		return true
	}
	n := 120
	if testing.Short() {
		n = 20
	}
	if err := quick.Check(f, quickConfig(n)); err != nil {
		t.Fatal(err)
	}
}

// TestStatesAreCanonical checks that equal states marshal to equal bytes, so
// the projector and region comparisons can compare encodings.
func TestStatesAreCanonical(t *testing.T) {
	m := newTestMerger(t)
	r := rand.New(rand.NewSource(7))
	for range 50 {
		evs := genEvents(r, 30)
		x := applyByIdentity(t, m, shuffledWithRepeats(r, evs))
		y := applyByIdentity(t, m, shuffledWithRepeats(r, evs))
		for id := range x {
			bx, err1 := marshalOpts.Marshal(x[id])
			by, err2 := marshalOpts.Marshal(y[id])
			if err1 != nil || err2 != nil || !bytes.Equal(bx, by) {
				t.Fatalf("identity %s: encodings differ (%v %v)", id, err1, err2)
			}
		}
	}
}
