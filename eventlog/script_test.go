package eventlog

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

var rewrite = flag.Bool("rewrite", false, "rewrite the expected output of testdata/*.txt scripts")

// TestScripts runs testdata/*.txt: sequences of log operations and their
// expected output. Each case is a command line, a "----" line, and the
// expected output up to a blank line. Lines starting with # are comments.
// Run with -rewrite to regenerate the expected output (then review the diff).
//
// Commands:
//
//	open [keep=N] [step=N] [retention=off]   open the script's log
//	close | reopen                           (reopen keeps the options)
//	append DATA...                           one Append; prints first=N
//	appendn N                                N single-record appends "r<seq>"; prints last=N
//	read FROM MAX                            Read; prints "seq data" lines
//	scan FROM                                a Reader from FROM to the end
//	state                                    first, last, floor, trimmed
//	cp-set NAME SEQ | cp-get NAME | cp-del NAME | cps
//	trim BELOW | floor SEQ
func TestScripts(t *testing.T) {
	files, err := filepath.Glob("testdata/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no scripts: %v", err)
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".txt"), func(t *testing.T) { runScript(t, f) })
	}
}

type scriptCase struct {
	pre      []string // comments and blank lines before the command
	cmd      string
	expected []string
	line     int
}

func parseScript(t *testing.T, path string) []scriptCase {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	var cases []scriptCase
	var pre []string
	for i := 0; i < len(lines); i++ {
		ln := lines[i]
		if strings.TrimSpace(ln) == "" || strings.HasPrefix(ln, "#") {
			pre = append(pre, ln)
			continue
		}
		c := scriptCase{pre: pre, cmd: ln, line: i + 1}
		pre = nil
		if i+1 >= len(lines) || lines[i+1] != "----" {
			t.Fatalf("%s:%d: command %q not followed by ----", path, i+1, ln)
		}
		i += 2
		for ; i < len(lines) && lines[i] != ""; i++ {
			c.expected = append(c.expected, lines[i])
		}
		cases = append(cases, c)
	}
	return cases
}

func runScript(t *testing.T, path string) {
	cases := parseScript(t, path)
	s := &scriptState{t: t, dir: t.TempDir()}
	defer func() {
		if s.l != nil {
			s.l.Close()
		}
	}()
	var out strings.Builder
	for _, c := range cases {
		got := s.run(c.cmd)
		if *rewrite {
			for _, p := range c.pre {
				out.WriteString(p + "\n")
			}
			out.WriteString(c.cmd + "\n----\n")
			for _, g := range got {
				out.WriteString(g + "\n")
			}
			out.WriteString("\n")
			continue
		}
		if !slices.Equal(got, c.expected) {
			t.Errorf("%s:%d: %s\n got:\n\t%s\nwant:\n\t%s", path, c.line, c.cmd,
				strings.Join(got, "\n\t"), strings.Join(c.expected, "\n\t"))
		}
	}
	if *rewrite {
		if err := os.WriteFile(path, []byte(strings.TrimRight(out.String(), "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

type scriptState struct {
	t    *testing.T
	dir  string
	opts Options
	l    *Log
}

func (s *scriptState) run(cmd string) []string {
	f := strings.Fields(cmd)
	arg := func(i int) uint64 {
		if i >= len(f) {
			s.t.Fatalf("%s: missing argument %d", cmd, i)
		}
		n, err := strconv.ParseUint(f[i], 10, 64)
		if err != nil {
			s.t.Fatalf("%s: %v", cmd, err)
		}
		return n
	}
	switch f[0] {
	case "open":
		s.opts = Options{Dir: s.dir}
		for _, a := range f[1:] {
			k, v, _ := strings.Cut(a, "=")
			n, _ := strconv.ParseUint(v, 10, 64)
			switch k {
			case "keep":
				s.opts.Retention.Keep = n
			case "step":
				s.opts.Retention.Step = n
			case "retention":
				s.opts.Retention.Off = v == "off"
			default:
				s.t.Fatalf("open: unknown option %q", a)
			}
		}
		return s.open()
	case "close":
		// s.l stays: later commands show what a closed log answers.
		return result(s.l.Close())
	case "reopen":
		if err := s.l.Close(); err != nil {
			return result(err)
		}
		return s.open()
	case "append":
		var recs [][]byte
		for _, d := range f[1:] {
			recs = append(recs, []byte(d))
		}
		first, err := s.l.Append(s.t.Context(), recs...)
		if err != nil {
			return result(err)
		}
		return []string{fmt.Sprintf("first=%d", first)}
	case "appendn":
		for range arg(1) {
			next := max(s.l.LastSeq(), s.l.Metrics().SequenceFloor) + 1
			if _, err := s.l.Append(s.t.Context(), fmt.Appendf(nil, "r%d", next)); err != nil {
				return result(err)
			}
		}
		return []string{fmt.Sprintf("last=%d", s.l.LastSeq())}
	case "read":
		recs, err := s.l.Read(arg(1), int(arg(2)))
		return append(formatRecords(recs), result(err)...)
	case "scan":
		r := s.l.NewReader(arg(1))
		defer r.Close()
		var recs []Record
		for r.Next() {
			rec := r.Record()
			recs = append(recs, Record{Seq: rec.Seq, Data: slices.Clone(rec.Data)})
		}
		return append(formatRecords(recs), result(r.Err())...)
	case "state":
		m := s.l.Metrics()
		return []string{fmt.Sprintf("first=%d last=%d floor=%d trimmed=%d", m.FirstSeq, m.LastSeq, m.SequenceFloor, m.TrimmedBelow)}
	case "cp-set":
		return result(s.l.SetCheckpoint(f[1], arg(2)))
	case "cp-get":
		n, err := s.l.Checkpoint(f[1])
		if err != nil {
			return result(err)
		}
		return []string{fmt.Sprintf("%s=%d", f[1], n)}
	case "cp-del":
		return result(s.l.DeleteCheckpoint(f[1]))
	case "cps":
		m, err := s.l.Checkpoints()
		if err != nil {
			return result(err)
		}
		var parts []string
		for k, v := range m {
			parts = append(parts, fmt.Sprintf("%s=%d", k, v))
		}
		slices.Sort(parts)
		if len(parts) == 0 {
			return []string{"(none)"}
		}
		return []string{strings.Join(parts, " ")}
	case "trim":
		return result(s.l.Trim(arg(1)))
	case "floor":
		return result(s.l.SetSequenceFloor(arg(1)))
	}
	s.t.Fatalf("unknown command %q", cmd)
	return nil
}

func (s *scriptState) open() []string {
	l, err := Open(s.opts)
	if err != nil {
		return result(err)
	}
	s.l = l
	return []string{"ok"}
}

func formatRecords(recs []Record) []string {
	if len(recs) == 0 {
		return []string{"(none)"}
	}
	var out []string
	for _, r := range recs {
		out = append(out, fmt.Sprintf("%d %s", r.Seq, r.Data))
	}
	return out
}

// result prints an error with its class, so scripts pin errors.Is too.
func result(err error) []string {
	if err == nil {
		return []string{"ok"}
	}
	class := "other"
	for _, c := range []struct {
		name string
		err  error
	}{{"trimmed", ErrTrimmed}, {"corrupt", ErrCorrupt}, {"invalid", ErrInvalid}, {"closed", ErrClosed}} {
		if errors.Is(err, c.err) {
			class = c.name
		}
	}
	return []string{fmt.Sprintf("error (%s): %v", class, err)}
}
