package ops

import (
	"fmt"
	"slices"
	"strings"
)

// SeqRange is an inclusive range of sequences.
type SeqRange struct {
	From uint64 `json:"from"`
	To   uint64 `json:"to"`
}

func (r SeqRange) String() string {
	if r.From == r.To {
		return fmt.Sprint(r.From)
	}
	return fmt.Sprintf("%d-%d", r.From, r.To)
}

// Len is the number of sequences in the range.
func (r SeqRange) Len() uint64 { return r.To - r.From + 1 }

// FormatRanges renders ranges compactly ("1-4, 9, 12-20"), eliding the
// middle of long lists.
func FormatRanges(rs []SeqRange) string {
	const show = 12
	var parts []string
	for i, r := range rs {
		if len(rs) > show && i == show/2 {
			parts = append(parts, fmt.Sprintf("... (%d more ranges) ...", len(rs)-show))
		}
		if len(rs) > show && i >= show/2 && i < len(rs)-show/2 {
			continue
		}
		parts = append(parts, r.String())
	}
	return strings.Join(parts, ", ")
}

// RangesLen is the number of sequences in rs.
func RangesLen(rs []SeqRange) uint64 {
	var n uint64
	for _, r := range rs {
		n += r.Len()
	}
	return n
}

// gaps returns the ranges of [lo, hi] that are not in have (sorted,
// deduplicated sequences).
func gaps(have []uint64, lo, hi uint64) []SeqRange {
	var out []SeqRange
	next := lo
	for _, s := range have {
		if s < next {
			continue
		}
		if s > hi {
			break
		}
		if s > next {
			out = append(out, SeqRange{From: next, To: s - 1})
		}
		next = s + 1
	}
	if next <= hi && hi >= lo {
		out = append(out, SeqRange{From: next, To: hi})
	}
	return out
}

// toRanges compresses sorted sequences into ranges.
func toRanges(seqs []uint64) []SeqRange {
	seqs = slices.Compact(slices.Clone(seqs))
	var out []SeqRange
	for _, s := range seqs {
		if n := len(out); n > 0 && out[n-1].To+1 == s {
			out[n-1].To = s
			continue
		}
		out = append(out, SeqRange{From: s, To: s})
	}
	return out
}
