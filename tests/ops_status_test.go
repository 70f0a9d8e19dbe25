package tests

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/meridian-id/meridian/ops"
)

// TestOpsStatus reads the whole deployment, then stops one node: the
// status names it down, and the other regions' sources from it lagging.
func TestOpsStatus(t *testing.T) {
	c := opsStartCluster(t)
	ctx := opsCtx(t, 60*time.Second)
	d := opsDeployment(t, c)
	th := ops.DefaultThresholds()
	th.MaxLagSeconds = 3

	var st *ops.DeploymentStatus
	opsEventually(t, 20*time.Second, "a healthy deployment", func() (bool, string) {
		var err error
		if st, err = ops.Status(ctx, ops.StatusConfig{Deployment: d, Thresholds: &th}); err != nil {
			return false, err.Error()
		}
		return st.OK, strings.Join(st.Findings(), "; ")
	})
	for _, r := range st.Regions {
		if r.Node == nil || r.Node.Log.LastSeq == 0 || len(r.Sources) != 3 {
			t.Errorf("%s: status %+v", r.Region, r)
		}
	}
	if _, err := json.Marshal(st); err != nil {
		t.Fatal(err)
	}

	if err := c.StopNode(euCentral); err != nil {
		t.Fatal(err)
	}
	opsEventually(t, 20*time.Second, "eu-central down, its heartbeats overdue elsewhere", func() (bool, string) {
		st, err := ops.Status(ctx, ops.StatusConfig{Deployment: d, Thresholds: &th})
		if err != nil {
			return false, err.Error()
		}
		all := strings.Join(st.Findings(), "; ")
		down := false
		lagging := 0
		for _, r := range st.Regions {
			if r.Region == euCentral {
				down = r.Health == "down"
				continue
			}
			for _, s := range r.Sources {
				if s.Origin == euCentral && s.Health == "lagging" {
					lagging++
				}
			}
		}
		return !st.OK && down && lagging == 2, all
	})
}
