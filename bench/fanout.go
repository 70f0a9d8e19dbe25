package bench

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/meridian-id/meridian/region"
)

// The fan-out ceiling: the raw NATS work the backbone's replication does
// for one event, without meridian's code. raw_sourcing_per_s copies one
// stream into one; the deployment stores every record in the origin stream
// and sources it into the inbox of every region allowed to hold it (GLOBAL
// parts into all three, RESIDENT parts of the eu zone into the two eu
// inboxes: five inbox copies per two-record event) and each region's
// projector consumes its inbox. raw_fanout_per_s publishes the same mix
// into a stream of the origin's domain, sources it the same way (the own
// region's copy a local source, the others naming the origin's domain,
// filtered by part), consumes every copy with an ordered consumer, and
// counts messages per second into the remote (eu-central) copy, the
// figure that e2e_records_per_s reads as a like-for-like ratio.
const (
	fanOrigin        = "bench-fan-origin"
	fanInbox         = "bench-fan-inbox" // one per region, in that region's domain
	fanSubjects      = "benchfan.>"
	fanGlobalSubject = "benchfan.g" // every inbox
	fanZoneSubject   = "benchfan.r" // the origin's zone only
)

// fanout holds the streams of the fan-out ceiling.
type fanout struct {
	origin string                         // the publishing region
	remote string                         // the region whose arrivals are counted
	js     map[string]jetstream.JetStream // every region's domain
	zone   map[string]bool                // regions in the origin's zone
	data   []byte
}

// setupFanout creates the origin stream in origin's domain and an inbox in
// every region's domain, then sends one message through.
func setupFanout(ctx context.Context, plan *region.Plan, p *region.Policy, domain func(string) string, js map[string]jetstream.JetStream, origin, remote string, payload int) (*fanout, error) {
	f := &fanout{origin: origin, remote: remote, js: js, zone: map[string]bool{}, data: benchData(payload)}
	oz, _ := p.ZoneOf(origin)
	for reg := range js {
		if z, _ := p.ZoneOf(reg); z == oz {
			f.zone[reg] = true
		}
	}
	ocfg, err := streamLike(plan, origin, fanOrigin, fanSubjects)
	if err != nil {
		return nil, err
	}
	if _, err := createStream(ctx, js[origin], ocfg); err != nil {
		return nil, err
	}
	for reg, rjs := range js {
		icfg, err := streamLike(plan, reg, fanInbox)
		if err != nil {
			return nil, errors.Join(err, f.delete())
		}
		filters := []string{fanGlobalSubject}
		if f.zone[reg] {
			filters = append(filters, fanZoneSubject)
		}
		for _, fl := range filters {
			src := &jetstream.StreamSource{Name: fanOrigin, FilterSubject: fl}
			if reg != origin { // as the deployment: the own origin is a local source
				src.External = &jetstream.ExternalStream{APIPrefix: region.DomainAPIPrefix(domain(origin))}
			}
			icfg.Sources = append(icfg.Sources, src)
		}
		if _, err := createStream(ctx, rjs, icfg); err != nil {
			return nil, errors.Join(err, f.delete())
		}
	}
	if _, err := f.throughput(ctx, 2); err != nil {
		return nil, errors.Join(fmt.Errorf("fan-out did not start: %w", err), f.delete())
	}
	return f, nil
}

// delete removes the fan-out streams (those that exist).
func (f *fanout) delete() error {
	var errs []error
	for reg, js := range f.js {
		if err := deleteStream(js, fanInbox); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
			errs = append(errs, fmt.Errorf("%s: %w", reg, err))
		}
	}
	if err := deleteStream(f.js[f.origin], fanOrigin); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// consumeAll consumes every region's inbox copy from its next sequence
// with an ordered consumer (as every region's projector does) and returns
// the remote region's arrival counter; the others only consume.
func (f *fanout) consumeAll(ctx context.Context, n int, base time.Time) (*arrivalCounter, []jetstream.ConsumeContext, error) {
	var ccs []jetstream.ConsumeContext
	stop := func() {
		for _, cc := range ccs {
			cc.Stop()
		}
	}
	var remote *arrivalCounter
	for reg, js := range f.js {
		st, err := js.Stream(ctx, fanInbox)
		if err != nil {
			stop()
			return nil, nil, fmt.Errorf("bench: fan-out: %s: %w", reg, err)
		}
		info, err := st.Info(ctx)
		if err != nil {
			stop()
			return nil, nil, fmt.Errorf("bench: fan-out: %s: %w", reg, err)
		}
		cons, err := js.OrderedConsumer(ctx, fanInbox, jetstream.OrderedConsumerConfig{
			DeliverPolicy: jetstream.DeliverByStartSequencePolicy,
			OptStartSeq:   info.State.LastSeq + 1,
		})
		if err != nil {
			stop()
			return nil, nil, fmt.Errorf("bench: fan-out: %s consumer: %w", reg, err)
		}
		var h jetstream.MessageHandler
		if reg == f.remote {
			remote = newArrivalCounter(n, base)
			h = remote.handle
		} else {
			h = func(m jetstream.Msg) { _ = m.Data() }
		}
		cc, err := cons.Consume(h, jetstream.PullMaxMessages(4096))
		if err != nil {
			stop()
			return nil, nil, fmt.Errorf("bench: fan-out: %s consume: %w", reg, err)
		}
		ccs = append(ccs, cc)
	}
	if remote == nil {
		stop()
		return nil, nil, fmt.Errorf("bench: fan-out: no connection to the remote region %s", f.remote)
	}
	return remote, ccs, nil
}

// throughput publishes n messages asynchronously with message ids,
// alternating the GLOBAL and the zone subject as the shipper alternates an
// event's two parts, and returns messages/s from the first publish to the
// last arrival in the remote region's inbox copy. The remote region must
// be in the origin's zone (it receives both parts).
func (f *fanout) throughput(ctx context.Context, n int) (float64, error) {
	if !f.zone[f.remote] {
		return 0, fmt.Errorf("bench: fan-out: remote region %s is not in the zone of %s", f.remote, f.origin)
	}
	base := time.Now()
	a, ccs, err := f.consumeAll(ctx, n, base)
	if err != nil {
		return 0, err
	}
	defer func() {
		for _, cc := range ccs {
			cc.Stop()
		}
	}()
	pub := f.js[f.origin]
	prefix := nuid.Next() + "-"
	stall := jetstream.WithStallWait(time.Minute)
	start := time.Since(base)
	src := sourcing{data: f.data}
	for i := range n {
		subj := fanGlobalSubject
		if i%2 == 1 {
			subj = fanZoneSubject
		}
		if _, err := pub.PublishAsync(subj, src.message(i), jetstream.WithMsgID(prefix+strconv.Itoa(i)), stall); err != nil {
			return 0, fmt.Errorf("bench: fan-out: publish %d: %w", i, err)
		}
	}
	select {
	case <-pub.PublishAsyncComplete():
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	if err := a.wait(ctx, time.Minute); err != nil {
		return 0, fmt.Errorf("bench: fan-out: %w", err)
	}
	return float64(n) / (time.Duration(a.last.Load()) - start).Seconds(), nil
}
