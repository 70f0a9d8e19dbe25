package ops

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/meridian-id/meridian/eventlog"
	"github.com/meridian-id/meridian/keystore"
	"github.com/meridian-id/meridian/ops/inspect"
	"github.com/meridian-id/meridian/projector"
	"github.com/meridian-id/meridian/region"
)

// OfflineRegion is a stopped node's stores opened here, for verify
// without the node: its read model (with its key store, to open resident
// states) and its log.
type OfflineRegion struct {
	Region string
	keys   *keystore.Store
	model  *projector.Model
	log    *eventlog.Log
}

// OpenOffline opens the stores of a stopped node's data directory.
func OpenOffline(regionName, dataDir string) (_ *OfflineRegion, err error) {
	o := &OfflineRegion{Region: regionName}
	defer func() {
		if err != nil {
			o.Close()
		}
	}()
	if o.keys, err = openKeys(filepath.Join(dataDir, KeysDir)); err != nil {
		return nil, err
	}
	if o.model, err = openModel(filepath.Join(dataDir, ModelDir), o.keys); err != nil {
		return nil, err
	}
	if o.log, err = openLog(filepath.Join(dataDir, LogDir), false); err != nil {
		return nil, err
	}
	return o, nil
}

// Source digests the model.
func (o *OfflineRegion) Source() DigestSource { return ModelSource{Label: o.Region, Model: o.model} }

// Audit audits the log and the model under policy p.
func (o *OfflineRegion) Audit(p *region.Policy) func(ctx context.Context) (*inspect.AuditReport, error) {
	return func(ctx context.Context) (*inspect.AuditReport, error) {
		a, err := inspect.NewAuditor(p, o.Region)
		if err != nil {
			return nil, err
		}
		rep := &inspect.AuditReport{Region: o.Region, Zone: a.Zone}
		lf, n, err := a.AuditLog(ctx, o.log)
		if err != nil {
			return nil, fmt.Errorf("audit log of %s: %w", o.Region, err)
		}
		mf, m, err := a.AuditModel(o.model)
		if err != nil {
			return nil, fmt.Errorf("audit model of %s: %w", o.Region, err)
		}
		rep.LogRecords, rep.Identities = n, m
		rep.Findings = append(append([]inspect.Finding{}, lf...), mf...)
		return rep, nil
	}
}

// Close closes the stores.
func (o *OfflineRegion) Close() error {
	var errs []error
	if o.log != nil {
		errs = append(errs, o.log.Close())
	}
	if o.model != nil {
		errs = append(errs, o.model.Close())
	}
	if o.keys != nil {
		errs = append(errs, o.keys.Close())
	}
	return errors.Join(errs...)
}
