package region

import (
	"slices"
	"sort"

	"github.com/nats-io/nats-server/v2/server"
)

// Permissions are the NATS permissions of one region's credentials, as
// plain data so that they can be rendered into a server config, a JWT or an
// embedded server's users alike.
type Permissions struct {
	Publish   SubjectPermissions
	Subscribe SubjectPermissions
}

// SubjectPermissions allow and deny subjects; an empty Allow allows all
// subjects not denied.
type SubjectPermissions struct {
	Allow []string
	Deny  []string
}

// compilePermissions derives what a region's credentials may do:
//
//   - publish only to the region's own origin subjects, to its own domain's
//     JetStream API (unprefixed, as seen by a client of that domain, and
//     $JS.<domain>.API), to JetStream acks and flow-control replies, to
//     exactly the claims bucket in the claims domain, and to the account
//     info request of every other region's domain ($JS.<domain>.API.INFO:
//     limits and usage, no message data), which the projector uses to tell
//     an unreachable origin from a stalled source. Not to the rest of other
//     domains' API: with it a client could create a consumer on another
//     region's inbox and read that zone's data through it, or fetch another
//     zone's resident records with STREAM.MSG.GET / DIRECT.GET, which take
//     their subject filter in the payload where permissions cannot see it.
//     Lag is measured from the region's own inbox instead
//     (projector/lag.go).
//   - subscribe to anything but the resident subjects of zones the region is
//     not in, and the sourcing deliveries ($JS.S.>) that carry other zones'
//     data across the hub and, with interest, through this region's server.
//
// Not covered here: a client subscribing to _INBOX.> can still see replies
// addressed to others that pass through its server; closing that needs
// per-region inbox prefixes (nats.CustomInboxPrefix) or leaf-node export
// rules in the topology.
func compilePermissions(p *Policy, region string) Permissions {
	r, _ := p.Region(region)
	pub := []string{
		OriginSubjects(region),
		"$JS.API.>",
		DomainAPIPrefix(r.JetStreamDomain) + ".>",
		"$JS.ACK.>",
		"$JS.FC.>",
	}
	if c, ok := p.ClaimsRegion(); ok {
		cd, _ := p.Domain(c)
		pub = append(pub, claimsPublish(cd, c == region)...)
	}
	for _, other := range p.Regions() {
		if d, _ := p.Domain(other); d != r.JetStreamDomain {
			pub = append(pub, AccountInfoSubject(d))
		}
	}
	var subDeny []string
	for _, z := range p.Zones() {
		if z != r.Zone {
			subDeny = append(subDeny, ResidentFilter(z))
		}
	}
	subDeny = append(subDeny, "$JS.S.>")
	return Permissions{
		Publish:   SubjectPermissions{Allow: sortedUnique(pub)},
		Subscribe: SubjectPermissions{Deny: sortedUnique(subDeny)},
	}
}

// claimsPublish is what a KV client bound to ClaimsBucket publishes. In its
// own domain, puts go to $KV.<bucket>.<key> (the rest of the API is allowed
// whole). From another domain (jetstream.NewWithDomain), puts go to
// $JS.<domain>.API.$KV.<bucket>.<key>, which the claims server maps back,
// and reads, watches and stream info to that domain's API, restricted here
// to the bucket's stream.
func claimsPublish(cd string, own bool) []string {
	if own {
		return []string{"$KV." + ClaimsBucket + ".>"}
	}
	api := DomainAPIPrefix(cd) + "."
	st := ClaimsStream()
	return []string{
		api + "$KV." + ClaimsBucket + ".>",
		api + "STREAM.INFO." + st,
		api + "STREAM.MSG.GET." + st,
		api + "DIRECT.GET." + st,
		api + "DIRECT.GET." + st + ".>",
		api + "CONSUMER.CREATE." + st,
		api + "CONSUMER.CREATE." + st + ".>",
		api + "CONSUMER.DELETE." + st + ".>",
		api + "CONSUMER.INFO." + st + ".>",
		api + "CONSUMER.MSG.NEXT." + st + ".>",
	}
}

// AccountInfoSubject is the JetStream account info request of a domain,
// the only request a region's credentials may send into another domain
// besides the claims bucket's.
func AccountInfoSubject(domain string) string { return DomainAPIPrefix(domain) + ".INFO" }

func sortedUnique(s []string) []string {
	s = slices.Clone(s)
	sort.Strings(s)
	return slices.Compact(s)
}

// ServerPermissions converts p for an embedded nats-server user
// (server.User.Permissions). Empty lists stay nil so the server treats them
// as "not restricted".
func (p Permissions) ServerPermissions() *server.Permissions {
	conv := func(sp SubjectPermissions) *server.SubjectPermission {
		if len(sp.Allow) == 0 && len(sp.Deny) == 0 {
			return nil
		}
		return &server.SubjectPermission{Allow: slices.Clone(sp.Allow), Deny: slices.Clone(sp.Deny)}
	}
	return &server.Permissions{Publish: conv(p.Publish), Subscribe: conv(p.Subscribe)}
}
