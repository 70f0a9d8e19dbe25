package region

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// The embedded topology never picks a port by listening on :0 and closing it
// (that handed one port out twice here). Servers start on port -1 and the
// link proxies on 127.0.0.1:0, each keeping the listener the OS gave it; the
// ports it got are then written to <dir>/ports.json so that a restart, of one
// server or of the whole topology with the same directory, binds them again.

const embeddedPortsFile = "ports.json"

// embeddedPorts is the content of <dir>/ports.json. Zero means "not chosen yet".
type embeddedPorts struct {
	Hub     embeddedHubPorts               `json:"hub"`
	Regions map[string]embeddedRegionPorts `json:"regions"`
}

type embeddedHubPorts struct {
	Client   int `json:"client"`
	Leafnode int `json:"leafnode"`
}

type embeddedRegionPorts struct {
	Client int `json:"client"` // the region's NATS client port
	Link   int `json:"link"`   // its link proxy, in front of the hub's leafnode port
}

// loadEmbeddedPorts reads <dir>/ports.json; a missing file is an empty set.
func loadEmbeddedPorts(dir string) (embeddedPorts, error) {
	path := filepath.Join(dir, embeddedPortsFile)
	var p embeddedPorts
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		p.Regions = map[string]embeddedRegionPorts{}
		return p, nil
	}
	if err != nil {
		return p, fmt.Errorf("region: read ports: %w", err)
	}
	if err := json.Unmarshal(data, &p); err != nil {
		return p, fmt.Errorf("region: %s: not valid JSON (delete it to choose new ports): %w", path, err)
	}
	if p.Regions == nil {
		p.Regions = map[string]embeddedRegionPorts{}
	}
	check := func(field string, port int) error {
		if port < 0 || port > 65535 {
			return fmt.Errorf("region: %s: %s %d: must be 0..65535 (delete the file to choose new ports)", path, field, port)
		}
		return nil
	}
	errs := []error{check("hub.client", p.Hub.Client), check("hub.leafnode", p.Hub.Leafnode)}
	for name, r := range p.Regions {
		errs = append(errs, check("regions."+name+".client", r.Client), check("regions."+name+".link", r.Link))
	}
	return p, errors.Join(errs...)
}

// saveEmbeddedPorts replaces <dir>/ports.json atomically, so that a crash
// leaves either the old or the new file.
func saveEmbeddedPorts(dir string, p embeddedPorts) error {
	data, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return fmt.Errorf("region: encode ports: %w", err)
	}
	tmp, err := os.CreateTemp(dir, embeddedPortsFile+".tmp*")
	if err != nil {
		return fmt.Errorf("region: save ports: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	if _, err := tmp.Write(append(data, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("region: save ports: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("region: save ports: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("region: save ports: %w", err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, embeddedPortsFile)); err != nil {
		return fmt.Errorf("region: save ports: %w", err)
	}
	return nil
}

// loopbackPortFree reports whether 127.0.0.1:port can be bound now. It is
// only a probe of a port this topology already owns (the server binds it
// right after); it never allocates one.
func loopbackPortFree(port int) bool {
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return false
	}
	_ = ln.Close()
	return true
}

// waitPortsFree polls until every port can be bound, or ctx ends. Right
// after a shutdown a port can be busy for a moment.
func waitPortsFree(ctx context.Context, ports ...int) error {
	backoff := 10 * time.Millisecond
	for {
		busy := 0
		for _, p := range ports {
			if p > 0 && !loopbackPortFree(p) {
				busy = p
				break
			}
		}
		if busy == 0 {
			return nil
		}
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("region: port %d on 127.0.0.1 still busy: %w", busy, ctx.Err())
		}
		backoff = min(2*backoff, 200*time.Millisecond)
	}
}
