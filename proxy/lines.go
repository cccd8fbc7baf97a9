package proxy

// Small helpers the session code shares: fixed lines and hole renderings.

import (
	"net"
	"time"

	"github.com/ftpalg/ftpalg/alg"
	"github.com/ftpalg/ftpalg/natrules"
)

func writeLine(c net.Conn, s string, timeout time.Duration) {
	c.SetWriteDeadline(time.Now().Add(timeout))
	c.Write([]byte(s))
}

func peerName(s alg.Side) string { return s.String() }

func toNat(h alg.Hole) natrules.Hole {
	return natrules.Hole{From: h.From, To: h.To, DNAT: h.DNAT, SNAT: h.SNAT}
}

func holeString(h alg.Hole) string {
	s := h.Kind.String() + " " + h.From.String() + " -> " + h.To.String()
	if h.DNAT.IsValid() {
		s += " dnat " + h.DNAT.String()
	}
	if h.SNAT.IsValid() {
		s += " snat " + h.SNAT.String()
	}
	return s
}

func otherSide(s alg.Side) alg.Side {
	if s == alg.FromClient {
		return alg.FromServer
	}
	return alg.FromClient
}
