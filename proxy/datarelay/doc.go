// Package datarelay carries FTP data connections through ftpalg in user
// space, for the sessions the kernel cannot carry: a client and a server of
// different address families (family bridging), or a TLS side (FTPS
// termination). Sessions that need no relay never touch it.
//
// Two parts, usable separately:
//
//	ln, err := datarelay.Listen(ctx, datarelay.ListenConfig{
//		Local: netip.AddrPortFrom(gatewayAddr, poolPort), // ftpalg's own address
//		Peer:  clientAddr,                                // the only host that may connect
//		Holes: manager,                                   // natrules.Manager (Open, Revoke)
//		Wait:  ttl,                                       // how long Accept waits
//	})
//	port := ln.Addr().Port()    // announce it (229, 227, EPRT, PORT)
//	c, err := ln.Accept(ctx)    // the one connection, from Peer; the listener is closed after it
//
//	st, err := datarelay.Relay(ctx, c, upstream, datarelay.Limits{Idle: time.Minute})
//	// st.AToB, st.BToA: bytes copied each way, for the audit log
//
// Listen binds the socket first, then opens a local hole
// (natrules.LocalHole): one SYN from Peer to Local, within the hole's TTL.
// The kernel drops every other SYN to the port (natrules.Config.LocalPorts
// puts a DROP for the pool range after the hole rule), so a third host's SYN
// goes unanswered; Accept also checks the source (closing and counting any
// other, which the kernel should have dropped) as a second line. The
// listener accepts one connection, then closes its socket and revokes the
// hole, and Close (idempotent) does the same for one never used.
//
// Relay copies both ways until both directions ended, then closes both
// connections. When a direction ends with EOF the other connection is
// half-closed (CloseWrite; for a *tls.Conn also the TCP connection under
// it, after its close_notify), and the other direction goes on. Between two
// *net.TCPConn the copy is io.Copy, which splices in the kernel (the bytes
// never reach user space); any other net.Conn (a *tls.Conn: the caller
// wraps the client side in tls.Server itself) is copied through one buffer
// of Limits.Buffer bytes per direction. Limits.Idle ends a relay in which no
// byte moved either way for that long (for TCP sides progress is read from
// TCP_INFO, so the spliced path is watched too); Limits.Max bounds the whole
// relay; ctx cancels it. Any of these closes both connections and Relay
// returns the cause (ErrIdle, context.DeadlineExceeded, ctx.Err()), with the
// bytes copied so far.
//
// The API is small on purpose, and stable: the proxy's family bridge and
// its TLS termination both build on it.
package datarelay
