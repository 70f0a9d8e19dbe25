package conflict

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	meridianv1 "github.com/meridian-id/meridian/proto/meridian/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

var rewrite = flag.Bool("rewrite", false, "rewrite the expected output of testdata/*.txt scripts")

// TestScripts runs the scenarios in testdata/*.txt. A script is a sequence
// of blocks separated by blank lines; '#' lines are comments. Each block is
// one command, a "----" line and the expected output:
//
//	apply <state> <node> <hlc ms[.logical]> <event id> [seq=N] [part=global|resident] [identity=ID] [observed=node:ms,...] <body field> <JSON body>
//	    applies the event part to the named state: "ok" or "error: ..."
//	    (observed= sets the causal context, Event.observed)
//	merge <dst> <a> <b>      dst = Merge(a, b): "ok"
//	prune <dst> <resident> <global>  dst = Prune(resident, global): "ok"
//	view <state>...          View of the states, as indented JSON
//	state <state>            the raw IdentityState, as indented JSON
//	erased <state>           "true" or "false"
//
// States start empty; identity defaults to id1 and seq to 1. Run with
// -rewrite to regenerate the expected output after a deliberate change.
func TestScripts(t *testing.T) {
	files, err := filepath.Glob("testdata/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no scripts: %v", err)
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) { runScript(t, file) })
	}
}

type scriptBlock struct {
	comments []string
	cmd      string
	want     string
	line     int
}

func parseScript(t *testing.T, data string) []scriptBlock {
	var blocks []scriptBlock
	lines := strings.Split(data, "\n")
	for i := 0; i < len(lines); i++ {
		var b scriptBlock
		for ; i < len(lines) && (strings.HasPrefix(lines[i], "#") || strings.TrimSpace(lines[i]) == ""); i++ {
			if strings.HasPrefix(lines[i], "#") {
				b.comments = append(b.comments, lines[i])
			}
		}
		if i >= len(lines) {
			if len(b.comments) > 0 {
				blocks = append(blocks, b)
			}
			break
		}
		b.cmd, b.line = lines[i], i+1
		i++
		if i >= len(lines) || lines[i] != "----" {
			t.Fatalf("line %d: want ---- after the command", i+1)
		}
		var want []string
		for i++; i < len(lines) && strings.TrimSpace(lines[i]) != ""; i++ {
			want = append(want, lines[i])
		}
		b.want = strings.Join(want, "\n")
		blocks = append(blocks, b)
	}
	return blocks
}

func runScript(t *testing.T, file string) {
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	m := newTestMerger(t)
	states := map[string]*meridianv1.IdentityState{}
	blocks := parseScript(t, string(data))
	var out strings.Builder
	for _, b := range blocks {
		for _, c := range b.comments {
			out.WriteString(c + "\n")
		}
		if b.cmd == "" {
			continue
		}
		got := runCommand(t, m, states, b.cmd)
		if !*rewrite && got != b.want {
			t.Errorf("%s:%d: %s\ngot:\n%s\nwant:\n%s", file, b.line, b.cmd, got, b.want)
		}
		fmt.Fprintf(&out, "%s\n----\n%s\n\n", b.cmd, got)
	}
	if *rewrite {
		if err := os.WriteFile(file, []byte(strings.TrimRight(out.String(), "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func runCommand(t *testing.T, m *Merger, states map[string]*meridianv1.IdentityState, cmd string) string {
	fields := strings.Fields(cmd)
	switch fields[0] {
	case "apply":
		ev, err := parseApply(cmd)
		if err != nil {
			t.Fatalf("%s: %v", cmd, err)
		}
		s, err := m.Apply(states[fields[1]], ev)
		if err != nil {
			return "error: " + err.Error()
		}
		states[fields[1]] = s
		return "ok"
	case "merge":
		states[fields[1]] = m.Merge(states[fields[2]], states[fields[3]])
		return "ok"
	case "prune":
		states[fields[1]] = m.Prune(states[fields[2]], states[fields[3]])
		return "ok"
	case "view":
		var ss []*meridianv1.IdentityState
		for _, name := range fields[1:] {
			ss = append(ss, states[name])
		}
		return stableJSON(t, m.View(ss...))
	case "state":
		return stableJSON(t, states[fields[1]])
	case "erased":
		return strconv.FormatBool(m.Erased(states[fields[1]]))
	}
	t.Fatalf("unknown command %q", fields[0])
	return ""
}

// parseApply parses "apply <state> <node> <hlc> <id> [k=v...] <body> <json>".
func parseApply(cmd string) (*meridianv1.Event, error) {
	brace := strings.Index(cmd, "{")
	if brace < 0 {
		return nil, fmt.Errorf("no JSON body")
	}
	fields := strings.Fields(cmd[:brace])
	if len(fields) < 6 {
		return nil, fmt.Errorf("want apply <state> <node> <hlc> <event id> [k=v...] <body> <json>")
	}
	ms, logical, _ := strings.Cut(fields[3], ".")
	phys, err := strconv.ParseInt(ms, 10, 64)
	if err != nil {
		return nil, err
	}
	var lg uint64
	if logical != "" {
		if lg, err = strconv.ParseUint(logical, 10, 16); err != nil {
			return nil, err
		}
	}
	ev := &meridianv1.Event{
		OriginNode: fields[2],
		Hlc:        uint64(MakeTimestamp(phys, uint16(lg))),
		EventId:    fields[4],
		IdentityId: "id1",
		Sequence:   1,
	}
	for _, kv := range fields[5 : len(fields)-1] {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "seq":
			if ev.Sequence, err = strconv.ParseUint(v, 10, 64); err != nil {
				return nil, err
			}
		case "part":
			ev.Part = map[string]meridianv1.Part{"global": meridianv1.Part_PART_GLOBAL, "resident": meridianv1.Part_PART_RESIDENT}[v]
		case "identity":
			ev.IdentityId = v
		case "observed":
			// observed=<node>:<hlc ms>,... ("observed=" is an empty context).
			ev.Observed = &meridianv1.CausalContext{Hlc: map[string]uint64{}}
			for _, nh := range strings.FieldsFunc(v, func(r rune) bool { return r == ',' }) {
				n, h, _ := strings.Cut(nh, ":")
				ms, err := strconv.ParseInt(h, 10, 64)
				if err != nil {
					return nil, fmt.Errorf("observed %q: %v", nh, err)
				}
				ev.Observed.Hlc[n] = uint64(MakeTimestamp(ms, 0))
			}
		default:
			return nil, fmt.Errorf("unknown option %q", kv)
		}
	}
	r := ev.ProtoReflect()
	fd := r.Descriptor().Oneofs().ByName("body").Fields().ByName(protoreflect.Name(fields[len(fields)-1]))
	if fd == nil {
		return nil, fmt.Errorf("unknown body %q", fields[len(fields)-1])
	}
	body := r.Mutable(fd).Message()
	if err := protojson.Unmarshal([]byte(cmd[brace:]), body.Interface()); err != nil {
		return nil, err
	}
	return ev, nil
}

// stableJSON renders m as indented JSON that does not vary between runs
// (protojson randomises its whitespace on purpose).
func stableJSON(t *testing.T, m proto.Message) string {
	b, err := protojson.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	var compact, out bytes.Buffer
	if err := json.Compact(&compact, b); err != nil {
		t.Fatal(err)
	}
	if err := json.Indent(&out, compact.Bytes(), "", "  "); err != nil {
		t.Fatal(err)
	}
	return out.String()
}
