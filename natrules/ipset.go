package natrules

import (
	"fmt"
	"net/netip"
	"sync"
	"syscall"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// reqConn is the manager's request socket (NETLINK_NETFILTER) for what
// is on the path of every 227 and PORT: set members (ipset add and del)
// and a NAT hole's nftables transaction (nftelems.go). A request and its
// acknowledgements, no more system calls: the general netlink clients asked
// the kernel for the socket's address, or peeked, before every reply they
// read. Setup opens it, so that the descriptor exists before the first
// hole.
type reqConn struct {
	mu sync.Mutex
	c  *ctConn
}

// openReqConn opens the request socket in the manager's namespace, once.
func (m *Manager) openReqConn() error {
	rc := &m.req
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if rc.c != nil {
		return nil
	}
	c, err := m.dialCtNS()
	if err != nil {
		return err
	}
	rc.c = c
	return nil
}

// ipsetEntry sends one IPSET_CMD_ADD (with timeout ttl, seconds) or
// IPSET_CMD_DEL for e. No NLM_F_EXCL: adding a present member refreshes
// it, deleting a missing one is no error.
func (m *Manager) ipsetEntry(cmd int, e setEntry, ttl uint32) error {
	if err := m.openReqConn(); err != nil {
		return fmt.Errorf("netfilter request socket: %w", err)
	}
	err := m.req.c.exchange(uint16(unix.NFNL_SUBSYS_IPSET<<8|cmd), unix.NLM_F_ACK,
		func(b []byte) []byte { return ipsetRequest(b, cmd, e, ttl) }, nil)
	if errno, ok := err.(syscall.Errno); ok && int(errno) >= nl.IPSET_ERR_PRIVATE {
		err = nl.IPSetError(uintptr(errno)) // ipset's own codes, with their text
	}
	return err
}

// ipsetRequest appends the body of an add or del of e: the attributes
// `ipset add SET src,tcp:port,dst timeout ttl` sends.
func ipsetRequest(b []byte, cmd int, e setEntry, ttl uint32) []byte {
	b = appendNfgen(b, unix.AF_NETLINK, 0)
	b = appendAttr(b, nl.IPSET_ATTR_PROTOCOL, nl.IPSET_PROTOCOL)
	b = appendStringAttr(b, nl.IPSET_ATTR_SETNAME, e.Set)
	b, data := beginNest(b, nl.IPSET_ATTR_DATA)
	if cmd == nl.IPSET_CMD_ADD {
		b = appendAttr(b, nl.IPSET_ATTR_TIMEOUT|nl.NLA_F_NET_BYTEORDER, byte(ttl>>24), byte(ttl>>16), byte(ttl>>8), byte(ttl))
	}
	b = appendIpsetAddr(b, nl.IPSET_ATTR_IP, e.Src)
	b = appendIpsetAddr(b, nl.IPSET_ATTR_IP2, e.Dst)
	b = appendAttr(b, nl.IPSET_ATTR_PROTO, unix.IPPROTO_TCP)
	b = appendAttr(b, nl.IPSET_ATTR_PORT|nl.NLA_F_NET_BYTEORDER, byte(e.Port>>8), byte(e.Port))
	b = appendAttr(b, nl.IPSET_ATTR_LINENO|nl.NLA_F_NET_BYTEORDER, 0, 0, 0, 0)
	return endNest(b, data)
}

func appendIpsetAddr(b []byte, typ uint16, a netip.Addr) []byte {
	b, at := beginNest(b, typ)
	t := uint16(nl.IPSET_ATTR_IPADDR_IPV4)
	if !a.Is4() {
		t = nl.IPSET_ATTR_IPADDR_IPV6
	}
	b = appendAddrAttr(b, t|nl.NLA_F_NET_BYTEORDER, a)
	return endNest(b, at)
}
