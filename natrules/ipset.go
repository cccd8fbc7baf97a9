package natrules

import (
	"net/netip"
	"syscall"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// ipsetEntry sends one IPSET_CMD_ADD (with timeout ttl, seconds) or
// IPSET_CMD_DEL for e. No NLM_F_EXCL: adding a present member refreshes
// it, deleting a missing one is no error.
func (c *ctConn) ipsetEntry(cmd int, e setEntry, ttl uint32) error {
	err := c.exchange(uint16(unix.NFNL_SUBSYS_IPSET<<8|cmd), unix.NLM_F_ACK,
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
