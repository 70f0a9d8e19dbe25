package conflict

import (
	"math"
	"slices"

	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// View materialises the read model of an identity from its states, joined
// first: the projector passes the GLOBAL parts' state and the RESIDENT parts'
// state (unsealed), and gets one Identity. An erased identity views as its id
// with erased set and nothing else. Set elements list in key order, so equal
// states view equal.
func (m *Merger) View(states ...*meridianv1.IdentityState) *meridianv1.Identity {
	return m.view(states...).Interface().(*meridianv1.Identity)
}

func (m *Merger) view(states ...*meridianv1.IdentityState) protoreflect.Message {
	var j *meridianv1.IdentityState
	for _, s := range states {
		j = m.Merge(j, s)
	}
	out := m.newIdentity()
	if j.GetIdentityId() != "" {
		out.Set(m.idField, protoreflect.ValueOfString(j.GetIdentityId()))
	}
	if m.updatedField != nil && j.GetUpdatedHlc() != 0 {
		out.Set(m.updatedField, protoreflect.ValueOfUint64(j.GetUpdatedHlc()))
	}
	if j.GetErased() != nil {
		if m.erasedField != nil {
			out.Set(m.erasedField, protoreflect.ValueOfBool(true))
		}
		return out
	}
	// Every register holds an Identity with only its own field set, so the
	// view is their union (paths are unique). Registers that no longer
	// decode are skipped; fields the schema dropped are discarded.
	for _, regs := range [][]*meridianv1.Register{j.GetRegisters(), j.GetMaxRegisters()} {
		for _, r := range regs {
			_ = unmarshalOpts.Unmarshal(r.GetValue(), out.Interface())
		}
	}
	for _, set := range j.GetSets() {
		t := m.targets[set.GetName()]
		if t == nil || !t.fd.IsList() {
			continue
		}
		list := out.Mutable(t.fd).List()
		for _, e := range set.GetElements() {
			if e.GetAdded() == nil {
				continue
			}
			if t.keyField != nil {
				elem := list.NewElement()
				if unmarshalOpts.Unmarshal(e.GetValue(), elem.Message().Interface()) == nil {
					list.Append(elem)
				}
				continue
			}
			if v, ok := decodeKey(t.fd, e.GetKey()); ok {
				list.Append(v)
			}
		}
	}
	for _, c := range j.GetCounters() {
		t := m.targets[c.GetName()]
		if t == nil || t.rule != meridianv1.MergeRule_MERGE_RULE_COUNTER {
			continue
		}
		var n uint64
		for _, sh := range c.GetShares() {
			n += uint64(len(sh.GetSequences()))
		}
		out.Set(t.fd, counterValue(t.fd.Kind(), n))
	}
	return out
}

// counterValue converts a count to the target's integer kind, saturating.
func counterValue(kind protoreflect.Kind, n uint64) protoreflect.Value {
	switch kind {
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return protoreflect.ValueOfInt32(int32(min(n, math.MaxInt32)))
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return protoreflect.ValueOfInt64(int64(min(n, math.MaxInt64)))
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return protoreflect.ValueOfUint32(uint32(min(n, math.MaxUint32)))
	}
	return protoreflect.ValueOfUint64(n)
}

// Erased reports whether the identity of s is erased. The projector checks
// the GLOBAL state before it applies a RESIDENT part: the erasure arrives in
// the GLOBAL part, so the resident state alone cannot know it.
func (m *Merger) Erased(s *meridianv1.IdentityState) bool { return s.GetErased() != nil }

// Prune returns resident without what global makes dead: the tombstone alone
// if global is erased, and no payload in set elements that a GLOBAL remove
// cuts (removes travel in GLOBAL parts, so the resident state would
// otherwise keep, say, a removed credential's material at rest, though no
// view shows it). View(global, Prune(resident, global)) equals
// View(global, resident); the projector prunes before sealing the resident
// state. resident is not modified; it is returned itself when nothing in it
// is dead.
func (m *Merger) Prune(resident, global *meridianv1.IdentityState) *meridianv1.IdentityState {
	if global.GetErased() != nil {
		id := resident.GetIdentityId()
		if id == "" {
			id = global.GetIdentityId()
		}
		return tombstoneState(id, stampFromPB(global.GetErased()))
	}
	if !m.prunes(resident, global) {
		return resident
	}
	out := shallowState(resident)
	out.Sets = slices.Clone(out.GetSets())
	for k, set := range out.Sets {
		var gset *meridianv1.SetState
		if i, ok := findByKey(global.GetSets(), set.GetName(), (*meridianv1.SetState).GetName); ok {
			gset = global.GetSets()[i]
		}
		set = &meridianv1.SetState{Name: set.GetName(), Elements: slices.Clone(set.GetElements())}
		out.Sets[k] = set
		for i, e := range set.GetElements() {
			j, ok := findElement(gset.GetElements(), e.GetKey())
			if !ok || !hasCuts(gset.GetElements()[j]) {
				continue
			}
			set.Elements[i] = elementToPB(e.GetKey(), elementFromPB(e).Merge(cutsOnly(gset.GetElements()[j]), nil))
		}
	}
	return out
}

// prunes reports whether Prune would change resident (global is not
// erased).
func (m *Merger) prunes(resident, global *meridianv1.IdentityState) bool {
	for _, set := range resident.GetSets() {
		i, ok := findByKey(global.GetSets(), set.GetName(), (*meridianv1.SetState).GetName)
		if !ok {
			continue
		}
		gelems := global.GetSets()[i].GetElements()
		for _, e := range set.GetElements() {
			j, ok := findElement(gelems, e.GetKey())
			if !ok || !hasCuts(gelems[j]) {
				continue
			}
			old := elementFromPB(e)
			if !sameElement(old.Merge(cutsOnly(gelems[j]), nil), old) {
				return true
			}
		}
	}
	return false
}

// hasCuts reports whether a set element holds the cuts of a remove.
func hasCuts(e *meridianv1.SetElement) bool {
	return e.GetRemoved() != nil || len(e.GetCuts()) > 0
}

// cutsOnly is the element's cuts without its adds: what its removes kill
// in another state of the identity.
func cutsOnly(e *meridianv1.SetElement) AWElement[[]byte] {
	return AWElement[[]byte]{Removed: stampFromPB(e.GetRemoved()), Cuts: cutsFromPB(e.GetCuts())}
}
