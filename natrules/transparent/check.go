package transparent

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// RouteGetter looks up the gateway's route to an address (netlink.Handle).
type RouteGetter interface {
	RouteGet(dst net.IP) ([]netlink.Route, error)
}

// Finding is the result of CheckUpstream for one upstream.
type Finding struct {
	// Err: transparent mode cannot work (the daemon must not start).
	Err error
	// Warning: it may work, but ftpalg cannot tell (logged).
	Warning string
}

// CheckUpstream checks what can be checked from the gateway: the server
// must be on a directly connected network of the gateway, neither one of
// its own addresses nor reached through another router. Whether the
// server routes its replies to clients back through the gateway cannot be
// seen from here (docs/transparent.md).
func CheckUpstream(g RouteGetter, up netip.Addr) Finding {
	if up.IsLoopback() {
		return Finding{Err: fmt.Errorf("upstream %s is loopback: a server on the gateway itself sends its replies to clients out of the default route, not to ftpalg", up)}
	}
	routes, err := g.RouteGet(up.AsSlice())
	if err != nil {
		return Finding{Err: fmt.Errorf("no route to upstream %s: %w", up, err)}
	}
	if len(routes) == 0 {
		return Finding{Err: fmt.Errorf("no route to upstream %s", up)}
	}
	r := routes[0]
	switch {
	case r.Type == unix.RTN_LOCAL:
		return Finding{Err: fmt.Errorf("upstream %s is an address of the gateway itself: its replies to clients would not come back to ftpalg", up)}
	case r.Gw != nil:
		return Finding{Warning: fmt.Sprintf("upstream %s is reached through router %s, not on a directly connected network: "+
			"the server's replies to clients must be routed back through this gateway, which ftpalg cannot check", up, r.Gw)}
	}
	return Finding{}
}
